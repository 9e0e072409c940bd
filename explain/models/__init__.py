"""Loading image-text models, by name, behind one interface.

`BACKENDS` is the one table of backends: each names the model names it
claims and how it loads them, and `load_model` asks the table in order.
open_clip's forms (`hf-hub:ORG/REPO`, `open_clip:ARCH/TAG`, or a folder
with `open_clip_config.json`) go to `open_clip_backend`; everything else (a
plain `ORG/REPO` or a folder with a transformers `config.json`) goes to
`transformers_backend`. Every model comes back as an `EncoderModel`;
nothing above this package knows which library built it. Adding a backend
is one module and one row here.
"""

from collections.abc import Callable
from dataclasses import dataclass

from explain.models.base import DEFAULT_MODEL, DEVICES, TEXT_BATCH, EncoderModel, configured_models, resolve_device
from explain.models.folders import check_folder
from explain.models.open_clip_backend import is_open_clip_name, load_open_clip
from explain.models.transformers_backend import load_transformers, wrap_model


@dataclass(frozen=True)
class Backend:
    """One library that builds models: which names it claims, and how it loads one."""

    name: str
    claims: Callable[[str], bool]
    load: Callable[[str, str], EncoderModel]  # (model name, device) -> model


BACKENDS = (
    Backend("open_clip", is_open_clip_name, load_open_clip),
    Backend("transformers", lambda name: True, load_transformers),  # the rest: hub ids and saved folders
)


def backend_name(name: str) -> str:
    """The name of the backend that loads `name` (recorded with labels; nothing branches on it)."""
    return next(backend.name for backend in BACKENDS if backend.claims(name))


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto") -> EncoderModel:
    """Load a model by any of the supported name forms, its towers in `precision` (auto: fp16 on CUDA, bf16
    on a CPU with bf16 matrix units, fp32 elsewhere; see `explain.models.precision`).

    A folder is looked at first, so that one missing a part is refused naming what is missing (the config,
    the weights, the tokenizer's or the image processor's files) rather than with a library's riddle.
    """
    check_folder(name)
    backend = next(backend for backend in BACKENDS if backend.claims(name))
    model = backend.load(name, device)
    model.use_precision(precision)
    return model


__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEVICES",
    "TEXT_BATCH",
    "Backend",
    "backend_name",
    "EncoderModel",
    "configured_models",
    "load_model",
    "resolve_device",
    "wrap_model",
]
