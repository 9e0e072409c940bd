"""Prompt wording (the paper's rule, without the release's startswith('a') bug) and prompt layout."""

import pytest

from descriptors import DEFAULT_TEMPLATE, build_prompts, class_label, prompt_for, template_prompt
from descriptors.prompts import check_template


@pytest.mark.parametrize(
    ("descriptor", "prompt"),
    [
        ("protruding eyes", "tree frog, which has protruding eyes"),
        ("a bright green colour", "tree frog, which is a bright green colour"),
        ("an elongated body", "tree frog, which is an elongated body"),
        ("A long, flowing tail", "tree frog, which is A long, flowing tail"),
        ("used for climbing", "tree frog, which is used for climbing"),
        ("has sticky toe pads", "tree frog, which has sticky toe pads"),
        ("often found on leaves", "tree frog, which often found on leaves"),
        ("typically small", "tree frog, which typically small"),
        ("may be brown", "tree frog, which may be brown"),
        ("can change colour", "tree frog, which can change colour"),
        # Whole-word matching: the release's startswith('a') turned these into "which is ...".
        ("alternating bands", "tree frog, which has alternating bands"),
        ("antennae", "tree frog, which has antennae"),
        ("hasty movements", "tree frog, which has hasty movements"),
        ("canopy-dwelling habits", "tree frog, which has canopy-dwelling habits"),
        ("usually green", "tree frog, which has usually green"),
        ("a-frame shaped legs", "tree frog, which has a-frame shaped legs"),
        ("  extra   spaces  ", "tree frog, which has extra spaces"),
    ],
)
def test_prompt_wording(descriptor, prompt):
    assert prompt_for("tree frog", descriptor) == prompt


def test_class_names_read_with_spaces():
    assert class_label("tree_frog") == "tree frog"
    assert prompt_for("Great_White_Shark", "a pointed snout") == "Great White Shark, which is a pointed snout"
    assert template_prompt("tree_frog") == "a photo of a tree frog."
    assert template_prompt("tree frog", "itap of a {}") == "itap of a tree frog"


def test_build_prompts_groups_by_class_and_falls_back_to_template():
    plan = build_prompts({"tree frog": ["protruding eyes", " ", "a green colour"], "tailed frog": [], "newt": ["  "]})
    assert plan.classes == ("tree frog", "tailed frog", "newt")
    assert plan.counts == (2, 1, 1)
    assert plan.starts == (0, 2, 3)
    assert plan.descriptors == ("protruding eyes", "a green colour", "a photo of a tailed frog.", "a photo of a newt.")
    assert plan.prompts[:2] == ("tree frog, which has protruding eyes", "tree frog, which is a green colour")
    assert plan.prompts[2] == "a photo of a tailed frog."
    assert plan.fallback == {"tailed frog", "newt"}
    assert plan.prompts[plan.class_slice(0)] == plan.prompts[:2]


def test_fallback_uses_the_given_template():
    plan = build_prompts({"newt": []}, "a blurry photo of a {}.")
    assert plan.prompts == ("a blurry photo of a newt.",)


@pytest.mark.parametrize("template", ["a photo", "a {} of a {}", "a {0}", "a {name}", "{} }"])
def test_bad_templates_are_rejected(template):
    with pytest.raises(ValueError, match="exactly one"):
        check_template(template)


def test_default_template_is_valid():
    assert check_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE
