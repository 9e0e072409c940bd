"""The app's settings, read from the environment once, at start.

Everything an owner sets for a shared app (where datasets may be read
from, where uploads are unpacked, how much disk that may use, who may
spend the LLM key) is one frozen `Settings`, built by `from_environment`
and passed to every part of the page. Nothing else in the web package
reads the environment. A setting that cannot be read is one line naming
the variable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MB = 2**20


class SettingsError(ValueError):
    """An environment variable that does not hold what it should; the message names it."""


@dataclass(frozen=True)
class Settings:
    """What the owner of a shared app chose, with the defaults of `python app.py`."""

    data_root: Path | None = None  # DESCRY_DATA_ROOT: server folders a visitor may evaluate
    work_dir: Path = Path(tempfile.gettempdir()) / "descry-work"  # DESCRY_WORK_DIR: unpacked uploads, reports
    max_work_bytes: int = 2048 * MB  # DESCRY_WORK_MB: the work folder, all runs together
    keep_work_folders: int = 2  # the newest are kept even over the cap: their run may still be writing
    max_zip_bytes: int = 200 * MB  # DESCRY_MAX_ZIP_MB: one uploaded zip
    max_zip_files: int = 20_000
    downloads: Path = Path(tempfile.gettempdir()) / "descry-downloads"  # descriptor files for the download button
    max_downloads: int = 200  # the oldest go first
    llm_public: bool = True  # DESCRY_LLM_PUBLIC=0: visitors may not spend the owner's LLM key
    llm_token: str | None = None  # DESCRY_LLM_TOKEN: the API needs this token to reach the LLM
    llm_timeout: float = 30.0  # DESCRY_LLM_TIMEOUT: seconds per LLM request
    state_secret: str | None = None  # DESCRY_STATE_SECRET: encrypts what browsers keep; made once if unset
    proxy_hops: int = 0  # DESCRY_PROXY_HOPS: trusted proxies in front of the app (a Space has 1); 0 trusts none
    calibration: Path | None = None  # DESCRY_CALIBRATION: a calibration.json for the app's models
    min_probability: float = 0.0  # DESCRY_MIN_PROBABILITY: below it the answer is "unsure between A and B"
    min_margin: float = 0.5  # DESCRY_MIN_MARGIN: so is a lead over the runner-up below this (score units)

    @property
    def max_unzipped_bytes(self) -> int:
        """What one zip may expand to."""
        return 4 * self.max_zip_bytes

    @property
    def max_upload_bytes(self) -> int:
        """Per uploaded file: a dataset zip is the largest thing a visitor sends."""
        return max(self.max_zip_bytes, 20 * MB)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives, the defaults for the rest."""
        env = os.environ if environ is None else environ
        defaults = cls()
        root = env.get("DESCRY_DATA_ROOT")
        return cls(
            data_root=Path(root) if root else None,
            work_dir=Path(env.get("DESCRY_WORK_DIR") or defaults.work_dir),
            max_work_bytes=int(_number(env, "DESCRY_WORK_MB", defaults.max_work_bytes / MB) * MB),
            max_zip_bytes=int(_number(env, "DESCRY_MAX_ZIP_MB", defaults.max_zip_bytes / MB) * MB),
            llm_public=env.get("DESCRY_LLM_PUBLIC", "1").strip().lower() not in ("0", "false", "no", "off"),
            llm_token=env.get("DESCRY_LLM_TOKEN") or None,
            llm_timeout=_number(env, "DESCRY_LLM_TIMEOUT", defaults.llm_timeout),
            state_secret=env.get("DESCRY_STATE_SECRET") or None,
            proxy_hops=_count(env, "DESCRY_PROXY_HOPS"),
            calibration=_file(env, "DESCRY_CALIBRATION"),
            min_probability=_share(env, "DESCRY_MIN_PROBABILITY", defaults.min_probability),
            min_margin=_share(env, "DESCRY_MIN_MARGIN", defaults.min_margin, upper=None),
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0:
        raise SettingsError(f"{name}={env[name]!r} must be more than 0")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number") from None


def _count(env: Mapping[str, str], name: str) -> int:
    text = env.get(name)
    if not text:
        return 0
    if not text.strip().isdigit():
        raise SettingsError(f"{name}={text!r} is not a whole number")
    return int(text)


def _file(env: Mapping[str, str], name: str) -> Path | None:
    text = env.get(name)
    if not text:
        return None
    if not Path(text).is_file():
        raise SettingsError(f"{name}={text!r} is not a file")
    return Path(text)


def _share(env: Mapping[str, str], name: str, default: float, upper: float | None = 1.0) -> float:
    """A number from 0 (the test turned off) up to `upper`."""
    value = _float(env, name, default)
    if value < 0 or (upper is not None and value > upper) or value != value:
        raise SettingsError(f"{name}={env[name]!r} must be from 0 to {upper if upper is not None else 'any size'}")
    return value
