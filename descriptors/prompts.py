"""Turning class names and descriptors into the sentences CLIP reads.

This module owns the wording rule of Menon & Vondrick (ICLR 2023) in two
styles (Descry's whole-word rule, and the DCLIP release's exact string
rule for reproducing published numbers), the template prompt used for the
baseline and for classes without descriptors, and `PromptSet`, the flat,
class-grouped list of prompts that the scorer encodes. It does no I/O and
knows nothing about models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

DEFAULT_TEMPLATE = "a photo of a {}."
PROMPT_STYLES = ("descry", "dclip-release")

# First words that read naturally after "{class}, which is ..." and "{class}, which ...".
# Matching is on the whole first word: "alternating bands" is not "a ...".
_WHICH_IS = {"a", "an", "used"}
_WHICH = {"has", "often", "typically", "may", "can"}


def class_label(class_name: str) -> str:
    """The class name as it is read in a prompt: underscores become spaces."""
    return " ".join(class_name.replace("_", " ").split())


@lru_cache(maxsize=1 << 16)
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
    # The first word is compared lower-cased, with trailing ",;:" stripped: "Has," counts as "has".
    first = descriptor.split(" ", 1)[0].rstrip(",;:").lower()
    if first in _WHICH_IS:
        link = "which is"
    elif first in _WHICH:
        link = "which"
    else:
        link = "which has"
    return f"{class_label(class_name)}, {link} {descriptor}"


def release_link(descriptor: str) -> str:
    """The DCLIP release's linking words, reproduced exactly, quirks included.

    Its test is `str.startswith` on the raw descriptor: case-sensitive, and a
    prefix rather than a word, so "alternating bands" reads "which is" and
    "mayonnaise" reads like "may".

    >>> release_link("alternating bands")
    'which is alternating bands'
    >>> release_link("mayonnaise")
    'which mayonnaise'
    >>> release_link("Antennae")
    'which has Antennae'
    """
    if descriptor.startswith("a"):  # the release also tests "an", which "a" already covers
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


@dataclass(frozen=True)
class PromptStyle:
    """How a class and a descriptor become one sentence.

    `descry` (the default) is the paper's rule on whole first words, with
    whitespace tidied. `dclip-release` reproduces the DCLIP release byte for
    byte: class names only have "_" read as " ", descriptors are used as
    written, and the linking words come from `release_link`. `prefix` and
    `suffix` wrap every descriptor prompt (the release ends ImageNet's with
    "."; WaffleCLIP starts every one with "A photo of a ").
    """

    name: str = "descry"
    prefix: str = ""
    suffix: str = ""

    def __post_init__(self):
        if self.name not in PROMPT_STYLES:
            raise ValueError(f"prompt style {self.name!r} is not one of {', '.join(PROMPT_STYLES)}")

    @property
    def release(self) -> bool:
        return self.name == "dclip-release"

    def label(self, class_name: str) -> str:
        """The class name as this style writes it."""
        return class_name.replace("_", " ") if self.release else class_label(class_name)

    def prompt(self, class_name: str, descriptor: str) -> str:
        """The sentence for one descriptor of one class."""
        if self.release:
            return f"{self.prefix}{self.label(class_name)}, {release_link(descriptor)}{self.suffix}"
        return f"{self.prefix}{prompt_for(class_name, descriptor)}{self.suffix}"

    def descriptors(self, values: Sequence[str]) -> list[str]:
        """The descriptors of one class that get a prompt.

        Descry drops blank ones (a class left with none falls back to its
        template). The release keeps every string as written and turns an
        empty list into one empty descriptor, "{class}, which has ".
        """
        if self.release:
            return list(values) if values else [""]
        return [" ".join(d.split()) for d in values if d and d.strip()]


DESCRY = PromptStyle()


def template_prompt(class_name: str, template: str = DEFAULT_TEMPLATE, style: PromptStyle = DESCRY) -> str:
    """The baseline prompt for a class, e.g. "a photo of a tree frog."."""
    return template.format(style.label(class_name))


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

    @cached_property
    def starts(self) -> tuple[int, ...]:
        """Index of each class's first prompt (computed once: `class_slice` is called per class)."""
        starts, total = [], 0
        for count in self.counts:
            starts.append(total)
            total += count
        return tuple(starts)

    def class_slice(self, k: int) -> slice:
        start = self.starts[k]
        return slice(start, start + self.counts[k])


def build_prompts(
    descriptors: Mapping[str, Sequence[str]],
    template: str = DEFAULT_TEMPLATE,
    style: PromptStyle = DESCRY,
    labels: Mapping[str, str] | None = None,
) -> PromptSet:
    """Lay out the prompts of every class in the mapping's order.

    In the default style blank descriptors are skipped, and a class left with
    none falls back to its template prompt. `labels` gives the name a class
    is written with in its prompts when that differs from its key (a dataset
    folder "015.bonsai-101" is read as "bonsai").
    """
    check_template(template)
    classes, texts, prompts, counts, fallback = [], [], [], [], set()
    for class_name, class_descriptors in descriptors.items():
        label = labels.get(class_name, class_name) if labels else class_name
        kept = style.descriptors(class_descriptors)
        if kept:
            texts.extend(kept)
            prompts.extend(style.prompt(label, d) for d in kept)
        else:
            baseline = template_prompt(label, template, style)
            texts.append(baseline)
            prompts.append(baseline)
            fallback.add(class_name)
        classes.append(class_name)
        counts.append(max(len(kept), 1))
    return PromptSet(tuple(classes), tuple(texts), tuple(prompts), tuple(counts), frozenset(fallback))


def template_prompts(
    classes: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    style: PromptStyle = DESCRY,
    labels: Mapping[str, str] | None = None,
) -> PromptSet:
    """The baseline: one template prompt per class, laid out like any other prompt set."""
    check_template(template)
    prompts = tuple(template_prompt(labels.get(c, c) if labels else c, template, style) for c in classes)
    return PromptSet(tuple(classes), prompts, prompts, (1,) * len(prompts), frozenset(classes))
