"""Turning class names and descriptors into the sentences CLIP reads.

This module owns the wording rule of Menon & Vondrick (ICLR 2023), the
template prompt used for the baseline and for classes without descriptors,
and `PromptSet`, the flat, class-grouped list of prompts that the scorer
encodes. It does no I/O and knows nothing about models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_TEMPLATE = "a photo of a {}."

# First words that read naturally after "{class}, which is ..." and "{class}, which ...".
# Matching is on the whole first word: "alternating bands" is not "a ...".
_WHICH_IS = {"a", "an", "used"}
_WHICH = {"has", "often", "typically", "may", "can"}


def class_label(class_name: str) -> str:
    """The class name as it is read in a prompt: underscores become spaces."""
    return " ".join(class_name.replace("_", " ").split())


def normalise_name(class_name: str) -> str:
    """The form used to match class names: case-folded, underscores as spaces, single-spaced."""
    return " ".join(class_name.replace("_", " ").casefold().split())


def prompt_for(class_name: str, descriptor: str) -> str:
    """The paper's sentence for one descriptor of one class.

    >>> prompt_for("tree frog", "protruding eyes")
    'tree frog, which has protruding eyes'
    >>> prompt_for("tree frog", "a bright green colour")
    'tree frog, which is a bright green colour'
    >>> prompt_for("tailed frog", "often found near streams")
    'tailed frog, which often found near streams'
    """
    descriptor = " ".join(descriptor.split())
    first = descriptor.split(" ", 1)[0].rstrip(",;:").lower()
    if first in _WHICH_IS:
        link = "which is"
    elif first in _WHICH:
        link = "which"
    else:
        link = "which has"
    return f"{class_label(class_name)}, {link} {descriptor}"


def template_prompt(class_name: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The baseline prompt for a class, e.g. "a photo of a tree frog."."""
    return template.format(class_label(class_name))


def check_template(template: str) -> str:
    """Return the template if it has exactly one "{}" slot, else raise ValueError."""
    if template.count("{}") != 1 or template.replace("{}", "").count("{") or template.count("}") != 1:
        raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the class name")
    return template


@dataclass(frozen=True)
class PromptSet:
    """Every prompt to score for a list of classes, grouped by class.

    `prompts[starts[k]:starts[k] + counts[k]]` belong to `classes[k]`. A class
    without descriptors gets its template prompt as its only entry and is
    listed in `fallback`; its `descriptors` entry is that same template text.
    """

    classes: tuple[str, ...]
    descriptors: tuple[str, ...]  # [n_prompts] the raw text shown in charts
    prompts: tuple[str, ...]  # [n_prompts] the sentence the text encoder reads
    counts: tuple[int, ...]  # [n_classes]
    fallback: frozenset[str]

    @property
    def starts(self) -> tuple[int, ...]:
        """Index of each class's first prompt."""
        starts, total = [], 0
        for count in self.counts:
            starts.append(total)
            total += count
        return tuple(starts)

    def class_slice(self, k: int) -> slice:
        start = self.starts[k]
        return slice(start, start + self.counts[k])


def build_prompts(descriptors: Mapping[str, Sequence[str]], template: str = DEFAULT_TEMPLATE) -> PromptSet:
    """Lay out the prompts of every class in the mapping's order.

    Blank descriptors are skipped; a class left with none falls back to its
    template prompt.
    """
    check_template(template)
    classes, texts, prompts, counts, fallback = [], [], [], [], set()
    for class_name, class_descriptors in descriptors.items():
        kept = [" ".join(d.split()) for d in class_descriptors if d and d.strip()]
        if kept:
            texts.extend(kept)
            prompts.extend(prompt_for(class_name, d) for d in kept)
        else:
            baseline = template_prompt(class_name, template)
            texts.append(baseline)
            prompts.append(baseline)
            fallback.add(class_name)
        classes.append(class_name)
        counts.append(max(len(kept), 1))
    return PromptSet(tuple(classes), tuple(texts), tuple(prompts), tuple(counts), frozenset(fallback))
