"""WaffleCLIP's control: count, sharing, pairing, character source, frame, seeding, and the same draws as theirs."""

import numpy as np
import pytest

from descriptors.prompts import release_link
from descriptors.waffle import draw_waffle, waffle_prompts, waffle_shape, word_list

DESCRIPTORS = {
    "tree_frog": ["protruding eyes", "bright green colour", "sticky toe pads"],
    "tailed frog": ["a short tail-like extension", "flattened body"],
    "bullfrog": ["large round eardrums", "olive green skin"],
    "axolotl": [],
}


def test_word_list_is_waffleclips():
    words = word_list()
    assert len(words) == 4330 and words[0] == "" and words[1] == "06-12" and words[-1] == "zygodactyl"


def test_shape_is_measured_on_names_and_descriptors():
    shape = waffle_shape(list(DESCRIPTORS), list(DESCRIPTORS.values()))
    # Names: "tree frog", "tailed frog", "bullfrog", "axolotl": 1.5 words on average (rounds to 2, half to even),
    # mean word length (4 + 5 + 8 + 7) / 4 = 6. The raw names ("tree_frog" keeps its underscore) have 0.25
    # spaces on average, so one group, and a longest word of (9 + 6 + 8 + 7) / 4 = 7.5 -> 8 characters,
    # padded up to the next multiple of the group count as WaffleCLIP does, which always adds at least one: 9.
    assert (shape.words, shape.word_length, shape.pattern) == (2, 6, "a" * 9)
    text = "".join(v for values in DESCRIPTORS.values() for v in values)
    assert set(shape.characters) == set(text) - {" ", ",", "."} and list(shape.characters) == sorted(shape.characters)


def test_every_class_shares_the_same_pairs_in_waffleclips_frame():
    plan = waffle_prompts(DESCRIPTORS, pairs=15, seed=3)
    assert plan.classes == tuple(DESCRIPTORS) and plan.counts == (30,) * 4 and not plan.fallback
    first = plan.descriptors[plan.class_slice(0)]
    shape = waffle_shape(list(DESCRIPTORS), list(DESCRIPTORS.values()))
    vocabulary = {w[: shape.word_length] for w in word_list()}
    for k, name in enumerate(plan.classes):
        span = plan.class_slice(k)
        assert plan.descriptors[span] == first  # shared: only the class name changes
        label = name.replace("_", " ")
        assert plan.prompts[span] == tuple(f"A photo of a {label}, {release_link(d)}." for d in first)
    words, noise = first[0::2], first[1::2]
    assert all(len(d.split(" ")) == shape.words and set(d.split(" ")) <= vocabulary for d in words)
    assert all(len(d) == len(shape.pattern) and set(d) <= set(shape.characters) for d in noise)


def test_noise_breaks_follow_the_names_spaces():
    # Every name has one space: two groups of random characters joined by ", ".
    descriptors = {"tree frog": ["green"], "tailed frog": ["brown"]}
    plan = waffle_prompts(descriptors, pairs=4, seed=0)
    for noise in plan.descriptors[1:8:2]:
        left, right = noise.split(", ")
        assert len(left) == len(right) == 3  # longest words 4 and 6: 5 characters, padded to 6, in two groups


def test_the_seed_makes_it_reproducible():
    same = waffle_prompts(DESCRIPTORS, seed=5)
    assert same == waffle_prompts(DESCRIPTORS, seed=5)
    assert same.prompts != waffle_prompts(DESCRIPTORS, seed=6).prompts
    assert len(waffle_prompts(DESCRIPTORS, pairs=2).prompts) == 4 * 4
    with pytest.raises(ValueError):
        waffle_prompts(DESCRIPTORS, pairs=0)


def test_draws_equal_waffleclips_own_calls():
    """Their code calls numpy's global legacy generator with lists: choice(list, 1, replace=False)
    for each word and character, then choice(list_of_classes). Restated here with those calls."""
    names = list(DESCRIPTORS)
    shape = waffle_shape(names, list(DESCRIPTORS.values()))
    pairs, seed = 15, 0
    np.random.seed(seed)
    words = [w[: shape.word_length] for w in word_list()]
    characters = np.unique(list(shape.characters))
    per_class = {}
    for name in names:
        drawn = []
        for _ in range(pairs):
            drawn.append(" ".join(np.random.choice(words, 1, replace=False)[0] for _ in range(shape.words)))
            drawn.append(
                "".join(
                    ", " if mark == " " else np.random.choice(characters, 1, replace=False)[0] for mark in shape.pattern
                )
            )
        per_class[name] = drawn
    chosen_name = np.random.choice(names)
    shared, chosen = draw_waffle(shape, len(names), pairs, seed)
    assert names[chosen] == chosen_name and shared == per_class[chosen_name]


def test_classes_without_any_descriptor_still_get_a_control():
    plan = waffle_prompts({"newt": [], "toad": []}, pairs=2, seed=0)
    assert plan.counts == (4, 4) and set("".join(plan.descriptors[1::2])) - {",", " "} <= set("newtoad")
