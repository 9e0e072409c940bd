"""Finding every problem in a descriptor set, each tied to the class it concerns.

`check_structure` looks at decoded JSON (is it an object of string lists?);
`check_descriptors` looks at a well-formed set (empty lists, classes that
collide when case and underscores are ignored, prompts past CLIP's 77-token
context, descriptors that name their own class). `store` uses the first to
refuse malformed files; `python -m descriptors validate`, the CLI and the
app report the rest. Nothing here reads files or calls a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from descriptors.names import duplicate_names, normalise_name
from descriptors.prompts import prompt_for
from descriptors.tokens import CLIP_CONTEXT, token_counts

STRUCTURE, EMPTY, DUPLICATE, TOO_LONG, NAMES_CLASS = "structure", "empty", "duplicate", "too-long", "names-class"


@dataclass(frozen=True)
class Problem:
    """One problem: its kind, the class it concerns (None for the whole file), and a one-line message."""

    kind: str
    class_name: str | None
    message: str

    def __str__(self) -> str:
        return self.message


def check_structure(data: object) -> list[Problem]:
    """Problems that make the data unusable as a descriptor set."""
    if not isinstance(data, dict):
        return [
            Problem(STRUCTURE, None, f"expected a JSON object mapping class names to lists, got {_json_type(data)}")
        ]
    problems = []
    for class_name, values in data.items():
        if has_surrogate(class_name):
            problems.append(
                Problem(
                    STRUCTURE,
                    class_name,
                    f"class {class_name!r}: the name contains a lone surrogate, which is not a character",
                )
            )
            continue
        if isinstance(values, list) and any(isinstance(v, str) and has_surrogate(v) for v in values):
            where = next(i for i, v in enumerate(values) if isinstance(v, str) and has_surrogate(v))
            problems.append(
                Problem(
                    STRUCTURE,
                    class_name,
                    f"class {class_name!r}: item {where} contains a lone surrogate, which is not a character",
                )
            )
            continue
        if not isinstance(values, list):
            problems.append(
                Problem(
                    STRUCTURE, class_name, f"class {class_name!r}: expected a list of strings, got {_json_type(values)}"
                )
            )
        else:
            bad = [i for i, value in enumerate(values) if not isinstance(value, str)]
            if len(bad) == 1:
                problems.append(Problem(STRUCTURE, class_name, f"class {class_name!r}: item {bad[0]} is not a string"))
            elif bad:
                where = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
                problems.append(Problem(STRUCTURE, class_name, f"class {class_name!r}: items {where} are not strings"))
    return problems


def has_surrogate(text: str) -> bool:
    """JSON's "\\ud800" escape decodes to half a character that no file, database or page can hold."""
    return any("\ud800" <= char <= "\udfff" for char in text)


def check_descriptors(
    descriptors: Mapping[str, Sequence[str]],
    context: int = CLIP_CONTEXT,
    count_tokens: Callable[[Sequence[str]], list[int]] = token_counts,
) -> list[Problem]:
    """Problems in a well-formed set, in file order; `count_tokens` counts a prompt's tokens with markers."""
    problems: list[Problem] = []
    repeats = {again: first for first, again in duplicate_names(descriptors)}
    long_candidates: list[tuple[str, str, str]] = []
    for class_name, values in descriptors.items():
        if class_name in repeats:
            problems.append(
                Problem(
                    DUPLICATE,
                    class_name,
                    f"class {class_name!r} duplicates {repeats[class_name]!r} "
                    "(names match ignoring case and underscores)",
                )
            )
        kept = [value for value in values if value.strip()]
        if not kept:
            problems.append(
                Problem(
                    EMPTY,
                    class_name,
                    f"class {class_name!r} has no descriptors (it will be scored with the template prompt)",
                )
            )
        naming = _class_name_pattern(class_name)
        for value in kept:
            if naming and naming.search(normalise_name(value)):
                problems.append(
                    Problem(
                        NAMES_CLASS, class_name, f"class {class_name!r}: descriptor {value!r} contains the class name"
                    )
                )
            long_candidates.append((class_name, value, prompt_for(class_name, value)))
    counts = count_tokens([prompt for _, _, prompt in long_candidates])
    for (class_name, value, _), count in zip(long_candidates, counts, strict=True):
        if count > context:
            problems.append(
                Problem(
                    TOO_LONG,
                    class_name,
                    f"class {class_name!r}: descriptor {_short(value)!r} makes a prompt of {count} tokens; "
                    f"CLIP reads {context}",
                )
            )
    order = {class_name: i for i, class_name in enumerate(descriptors)}
    return sorted(problems, key=lambda problem: order[problem.class_name])  # stable: per class, in check order


def _class_name_pattern(class_name: str) -> re.Pattern | None:
    name = normalise_name(class_name)
    return re.compile(rf"(?<!\w){re.escape(name)}(?:e?s)?(?!\w)") if name else None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
