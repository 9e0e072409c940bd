"""How class names are matched: one normalised form, and the lookups and duplicate checks built on it.

Class names from files, class lists, links and LLM answers meet each other
by `normalise_name` ("Tree_Frog" is "tree frog"), never by position or
exact spelling. Every lookup of a class in a descriptor set, and every
check for a class named twice, goes through this module, so the rule lives
in one place. No files, no prompts, no models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


def normalise_name(class_name: str) -> str:
    """The form used to match class names: case-folded, underscores as spaces, single-spaced."""
    return " ".join(class_name.replace("_", " ").casefold().split())


def key_index(names: Iterable[str]) -> dict[str, str]:
    """Each normalised name and the first spelling that has it: for many lookups in one set."""
    index: dict[str, str] = {}
    for name in names:
        index.setdefault(normalise_name(name), name)
    return index


def find_key(descriptors: Mapping[str, object], class_name: str) -> str | None:
    """The key of `descriptors` that names `class_name` (names matched loosely), or None."""
    wanted = normalise_name(class_name)
    return next((name for name in descriptors if normalise_name(name) == wanted), None)


def descriptors_of(descriptors: Mapping[str, list[str]], class_name: str) -> list[str]:
    """A copy of the descriptors of `class_name` (names matched loosely); empty when the set lacks it."""
    key = find_key(descriptors, class_name)
    return list(descriptors[key]) if key is not None else []


def duplicate_names(names: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(first spelling, later spelling) for every name that repeats an earlier one once normalised."""
    seen: dict[str, str] = {}
    for name in names:
        key = normalise_name(name)
        if key in seen:
            yield seen[key], name
        else:
            seen[key] = name
