"""How class names are matched: one normalised form, and the lookups and duplicate checks built on it.

Class names from files, class lists, links and LLM answers meet each other
by `normalise_name` ("Tree_Frog" is "tree frog"), never by position or
exact spelling. Every lookup of a class in a descriptor set, and every
check for a class named twice, goes through this module, so the rule lives
in one place; so does the matching of a dataset's class names (folder names
such as "001.Black_footed_Albatross") to descriptor keys. No files, no
prompts, no models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from descriptors.errors import DescriptorError


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


def match_key(name: str) -> str:
    """The loose form a dataset class and a descriptor key are matched by.

    Case is ignored; hyphens, underscores and runs of spaces are one space;
    a leading number with its "." or "_" ("001.", "015_") and a trailing
    "-101" (Caltech-256's duplicates of Caltech-101) are dropped. So
    "001.Black_footed_Albatross" meets "Black-footed Albatross", and
    "015.bonsai-101" meets "bonsai".
    """
    bare = re.sub(r"^\s*\d+[._]", "", name)
    bare = re.sub(r"-101\s*$", "", bare)
    return " ".join(re.sub(r"[-_]", " ", bare).casefold().split())


def readable_name(name: str) -> str:
    """How a dataset class without descriptors is written in its prompts: "015.bonsai-101" -> "bonsai"."""
    bare = re.sub(r"-101\s*$", "", re.sub(r"^\s*\d+[._]", "", name))
    return " ".join(re.sub(r"[-_]", " ", bare).split()) or name


@dataclass
class ClassMatch:
    """How each dataset class meets the descriptor file.

    `descriptors` and `labels` are keyed by dataset class, in dataset order:
    the class's descriptors as written (empty when it has none), and the
    name its prompts use: the matched descriptor key, else `readable_name`.
    """

    descriptors: dict[str, list[str]]
    labels: dict[str, str]
    missing: list[str]  # classes with no usable descriptor


def match_classes(classes: Sequence[str], descriptors: Mapping[str, list[str]], strict: bool = False) -> ClassMatch:
    """Descriptors for each dataset class, matched by name, never by position.

    An exact match (ignoring case and underscores) wins; otherwise the loose
    `match_key` form is tried. Two dataset classes that reach one key, or a
    class whose loose form fits two keys, are errors naming both. With
    `strict`, a class without descriptors is an error too.
    """
    exact = {normalise_name(key): key for key in descriptors}
    loose: dict[str, list[str]] = {}
    for key in descriptors:
        loose.setdefault(match_key(key), []).append(key)
    found: dict[str, str | None] = {}
    for name in classes:
        key = exact.get(normalise_name(name))
        if key is None:
            candidates = loose.get(match_key(name), [])
            if len(candidates) > 1:
                raise DescriptorError(
                    f"dataset class {name!r} matches more than one descriptor key: "
                    f"{candidates[0]!r} and {candidates[1]!r}"
                )
            key = candidates[0] if candidates else None
        found[name] = key
    by_label: dict[str, str] = {}
    labels = {name: key if key is not None else readable_name(name) for name, key in found.items()}
    for name, label in labels.items():
        other = by_label.setdefault(normalise_name(label), name)
        if other != name:
            what = f"descriptor key {found[name]!r}" if found[name] is not None else f"the name {label!r}"
            raise DescriptorError(
                f"dataset classes {other!r} and {name!r} both match {what}; rename one of the folders"
            )
    matched = {name: list(descriptors[key]) if key is not None else [] for name, key in found.items()}
    missing = [name for name, values in matched.items() if not any(v.strip() for v in values)]
    if strict and missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DescriptorError(f"{len(missing)} dataset classes have no descriptors: {shown}")
    return ClassMatch(matched, labels, missing)
