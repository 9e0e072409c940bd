"""Reading descriptor files and choosing classes from them.

A descriptor file is the published format of the DCLIP release (also used by
WaffleCLIP and CuPL): one JSON object mapping a class name to a list of
descriptor strings. This module reads such files, rejects malformed ones with
a one-line reason, and matches requested class names to the file's keys. It
does not build prompts (see `prompts`) and does not talk to an LLM.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from descriptors.errors import DescriptorError
from descriptors.names import duplicate_names, key_index, normalise_name
from descriptors.validate import check_structure

Descriptors = dict[str, list[str]]


def default_cache_dir() -> Path:
    """Where caches persist between runs: $DESCRY_CACHE_DIR, else $XDG_CACHE_HOME/descry or ~/.cache/descry."""
    configured = os.environ.get("DESCRY_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "descry"


def parse_descriptors(data: object, source: str = "descriptors") -> Descriptors:
    """Check the shape of already-decoded JSON and return it as a plain dict of lists."""
    problems = check_structure(data)
    if problems:
        more = f" (and {len(problems) - 1} more; see python -m descriptors validate)" if len(problems) > 1 else ""
        raise DescriptorError(f"{source}: {problems[0]}{more}")
    return {class_name: list(values) for class_name, values in data.items()}


def parse_json(text: str, source: str) -> object:
    """Decode JSON text, or raise DescriptorError naming `source`; a leading UTF-8 byte-order mark is fine."""
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as error:
        raise DescriptorError(
            f"{source}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise DescriptorError(f"{source}: JSON nested too deeply to be a descriptor file") from None


def read_json_file(path: Path, what: str = "descriptor file") -> object:
    """Read and decode a JSON file, with one-line errors for a missing, unreadable or malformed file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DescriptorError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DescriptorError(f"{path}: cannot read {what} ({error.__class__.__name__})") from None
    return parse_json(text, str(path))


def load_descriptors(path: str | Path) -> Descriptors:
    """Read a descriptor file, raising DescriptorError with the file and the reason."""
    path = Path(path)
    return parse_descriptors(read_json_file(path), str(path))


def parse_class_list(text: str) -> list[str]:
    """Split a comma-separated class list, e.g. the `--classes` flag."""
    return [name.strip() for name in text.split(",") if name.strip()]


def select_classes(descriptors: Mapping[str, list[str]], classes: Iterable[str] | None = None) -> Descriptors:
    """Pick classes, in the order given, matching names loosely against the file's keys.

    With `classes=None` every class of the file is used in file order. A
    requested class that the file lacks gets an empty list, which the prompt
    builder turns into a template fallback. Matching ignores case and treats
    underscores as spaces; it never goes by position.
    """
    names = [name for name in (descriptors if classes is None else classes) if normalise_name(name)]
    for first, again in duplicate_names(names):
        raise DescriptorError(
            f"class {again!r} is listed twice (also as {first!r}); names match ignoring case and underscores"
        )
    if not names:
        raise DescriptorError("the class list is empty: give at least one class name")
    index = key_index(descriptors)
    return {name: list(descriptors.get(index.get(normalise_name(name), ""), [])) for name in names}


def require_distinct(descriptors: Descriptors, source: str = "descriptors") -> Descriptors:
    """`descriptors` itself when its keys are distinct classes; two keys for one class is an error naming both."""
    for first, again in duplicate_names(descriptors):
        raise DescriptorError(
            f"{source} name the same class twice: {first!r} and {again!r} (names match ignoring case and underscores)"
        )
    return descriptors


def save_descriptors(path: str | Path, descriptors) -> None:
    """Write a descriptor file (or any JSON) atomically."""
    text = json.dumps(descriptors, ensure_ascii=False, indent=2) + "\n"
    write_atomically(path, lambda out: out.write(text))


def write_atomically(path: str | Path, write, mode: str = "w", **options) -> None:
    """Call `write(handle)` on a temporary file in the same folder, then rename it over `path`: the file is
    whole or untouched. An existing file keeps its mode; a new one gets 0644 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); keep the mode the file had, or the usual 0644 less the umask.
        try:
            file_mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            file_mode = 0o644 & ~umask
        os.chmod(temporary, file_mode)
        text_options = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(handle, mode, **text_options, **options) as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def merge_descriptors(
    existing: Mapping[str, list[str]], new: Mapping[str, list[str]], replace: bool = False
) -> tuple[Descriptors, list[str]]:
    """Add `new` classes to `existing` without touching classes it already has, unless `replace`.

    Names match ignoring case and underscores; a replaced class keeps the
    existing file's spelling and position. A class whose list is empty is
    filled, since it holds no edits to keep. Returns the merged set and the
    names of the classes that were written.
    """
    merged = {name: list(values) for name, values in existing.items()}
    by_key = key_index(merged)
    written = []
    for name, values in new.items():
        current = by_key.get(normalise_name(name))
        if current is None:
            merged[name] = list(values)
            by_key[normalise_name(name)] = name
            written.append(name)
        elif replace or not any(v.strip() for v in merged[current]):
            merged[current] = list(values)  # an empty list holds no edits to keep
            written.append(current)
    return merged, written


def missing_classes(existing: Mapping[str, list[str]], classes: Iterable[str]) -> list[str]:
    """The classes, in order, that `existing` lacks or lists without descriptors (names matched loosely)."""
    have = {normalise_name(name) for name, values in existing.items() if any(v.strip() for v in values)}
    return [name for name in classes if normalise_name(name) not in have]
