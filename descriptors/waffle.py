"""WaffleCLIP's control: random descriptors that say nothing about the class.

Roth et al. (ICCV 2023, "Waffling around for Performance") showed that
descriptors made of random words and random characters, the same ones for
every class, recover much of what LLM descriptors add. An evaluation that
reports descriptors without this control cannot tell knowledge from
ensembling. This module reproduces their main setting (`waffle` in their
`waffle_tools.py`): `count` pairs of (random words, random characters),
drawn once and shared by all classes, framed as "A photo of a {class},
which ... {descriptor}." with the DCLIP release's linking rule. The draws
use numpy's legacy `RandomState` in the same order as their code, so a seed
gives the same descriptors as theirs for the same classes and descriptor
file. It only builds prompts: no model, no scoring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from descriptors.prompts import PromptSet, PromptStyle

WORD_LIST = Path(__file__).resolve().parent.parent / "assets" / "waffleclip" / "word_list.txt"
WAFFLE_STYLE = PromptStyle("dclip-release", prefix="A photo of a ", suffix=".")
DEFAULT_PAIRS = 15  # WaffleCLIP's --waffle_count: 15 pairs, 30 descriptors per class


@cache
def word_list() -> tuple[str, ...]:
    """WaffleCLIP's 4,330 words, in their order (the first is the empty string)."""
    text = WORD_LIST.read_text(encoding="utf-8")
    return tuple(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))


@dataclass(frozen=True)
class WaffleShape:
    """What the random descriptors look like, measured on the class names and descriptors.

    `words`: random words per word descriptor (the mean number of words in a
    class name, at least 1); `word_length`: each random word is cut to the
    mean word length of the class names; `pattern`: "a" for a random
    character and " " for a ", " break, from the mean number of spaces and
    the mean longest word of the class names; `characters`: every character
    used in the descriptors except space, "," and "." (the class names'
    characters when there are no descriptors at all).
    """

    words: int
    word_length: int
    pattern: str
    characters: tuple[str, ...]


def waffle_shape(labels: Sequence[str], descriptors: Sequence[Sequence[str]]) -> WaffleShape:
    """Measure names and descriptors as WaffleCLIP does (`labels` as written in the descriptor file)."""
    spaced = [label.replace("_", " ") for label in labels]
    words = max(int(np.round(np.mean([len(name.split(" ")) for name in spaced]))), 1)
    word_length = int(np.round(np.mean([np.mean([len(w) for w in name.split(" ")]) for name in spaced])))
    # Characters: their code splits descriptors on spaces and drops "," and "."; an empty class list counts as "".
    characters = sorted({c for values in descriptors for text in (values or [""]) for c in text} - {" ", ",", "."})
    if not characters:  # no class has a descriptor (WaffleCLIP would fail here): draw from the names instead
        characters = sorted({c for label in spaced for c in label} - {" ", ",", "."})
    # The noise pattern comes from the raw names: their spaces, and their longest word.
    breaks = int(np.round(np.mean([label.count(" ") for label in labels]))) + 1
    length = int(np.ceil(np.mean([max(len(w) for w in label.split(" ")) for label in labels])))
    length += breaks - length % breaks
    pattern = " ".join("a" * (length // breaks) for _ in range(breaks))
    return WaffleShape(words, word_length, pattern, tuple(characters))


def draw_waffle(shape: WaffleShape, n_classes: int, pairs: int = DEFAULT_PAIRS, seed: int = 0) -> tuple[list[str], int]:
    """The shared random descriptors, and which class's draw they were ([2 * pairs] strings, index).

    Like WaffleCLIP, every class draws its own `pairs` pairs and then one
    class's draw is chosen for all, so the random stream matches theirs.
    """
    if not shape.characters:
        raise ValueError("the descriptors contain no characters to draw random strings from")
    rng = np.random.RandomState(seed)
    vocabulary = [word[: shape.word_length] for word in word_list()]
    draws = []
    for _ in range(n_classes):
        block = []
        for _ in range(pairs):
            # choice(n, 1, replace=False) consumes the stream exactly as their choice(list, 1, replace=False).
            block.append(
                " ".join(vocabulary[rng.choice(len(vocabulary), 1, replace=False)[0]] for _ in range(shape.words))
            )
            block.append(
                "".join(
                    shape.characters[rng.choice(len(shape.characters), 1, replace=False)[0]] if mark != " " else ", "
                    for mark in shape.pattern
                )
            )
        draws.append(block)
    chosen = int(rng.choice(n_classes))
    return draws[chosen], chosen


def waffle_prompts(
    descriptors: Mapping[str, Sequence[str]],
    pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    labels: Mapping[str, str] | None = None,
) -> PromptSet:
    """WaffleCLIP's prompts for every class of `descriptors` (keys in order; `labels` as written).

    Every class gets the same 2 * `pairs` descriptors; only the class name in
    the frame changes. The descriptors themselves only shape the random
    strings (which characters they use).
    """
    if pairs < 1:
        raise ValueError("the random control needs at least one pair of descriptors")
    classes = list(descriptors)
    names = [labels.get(c, c) if labels else c for c in classes]
    shape = waffle_shape(names, [descriptors[c] for c in classes])
    shared, chosen = draw_waffle(shape, len(classes), pairs, seed)
    # WaffleCLIP writes the chosen class's sentences, then swaps its name for each class's name.
    source = WAFFLE_STYLE.label(names[chosen])
    texts, prompts = [], []
    for name in names:
        texts.extend(shared)
        prompts.extend(WAFFLE_STYLE.prompt(names[chosen], d).replace(source, WAFFLE_STYLE.label(name)) for d in shared)
    counts = (len(shared),) * len(classes)
    return PromptSet(tuple(classes), tuple(texts), tuple(prompts), counts, frozenset())
