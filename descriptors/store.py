"""Reading descriptor files and choosing classes from them.

A descriptor file is the published format of the DCLIP release (also used by
WaffleCLIP and CuPL): one JSON object mapping a class name to a list of
descriptor strings. This module reads such files, rejects malformed ones with
a one-line reason, and matches requested class names to the file's keys. It
does not build prompts (see `prompts`) and does not talk to an LLM.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

Descriptors = dict[str, list[str]]


class DescriptorError(ValueError):
    """A descriptor file or a class list that cannot be used; the message is one line."""


def normalise_name(class_name: str) -> str:
    """The form used to match class names: case-folded, underscores as spaces, single-spaced."""
    return " ".join(class_name.replace("_", " ").casefold().split())


def parse_descriptors(data: object, source: str = "descriptors") -> Descriptors:
    """Check the shape of already-decoded JSON and return it as a plain dict."""
    if not isinstance(data, dict):
        raise DescriptorError(f"{source}: expected a JSON object mapping class names to lists, got {type(data).__name__}")
    parsed: Descriptors = {}
    for class_name, values in data.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DescriptorError(f"{source}: class {class_name!r} must map to a list of strings")
        parsed[class_name] = list(values)
    return parsed


def load_descriptors(path: str | Path) -> Descriptors:
    """Read a descriptor file, raising DescriptorError with the file and the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DescriptorError(f"{path}: no such descriptor file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DescriptorError(f"{path}: cannot read descriptor file ({error.__class__.__name__})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DescriptorError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    return parse_descriptors(data, str(path))


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
    by_key = {normalise_name(name): name for name in descriptors}
    chosen: Descriptors = {}
    seen: dict[str, str] = {}
    for name in descriptors if classes is None else classes:
        key = normalise_name(name)
        if not key:
            continue
        if key in seen:
            raise DescriptorError(f"class {name!r} is listed twice (also as {seen[key]!r}); names match ignoring case and underscores")
        seen[key] = name
        chosen[name] = list(descriptors.get(by_key.get(key, ""), []))
    if not chosen:
        raise DescriptorError("the class list is empty: give at least one class name")
    return chosen
