"""Prompt wording (the paper's rule, without the release's startswith('a') bug) and prompt layout."""

import pytest

from descriptors import DEFAULT_TEMPLATE, PromptStyle, build_prompts, class_label, prompt_for, template_prompt
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


# --- the DCLIP release's exact strings ------------------------------------------------------------------------

RELEASE = PromptStyle("dclip-release")
IMAGENET = PromptStyle("dclip-release", suffix=".")


@pytest.mark.parametrize(
    ("descriptor", "prompt"),
    [
        # The release tests str.startswith on the raw text: prefixes, not words, and case-sensitive.
        ("alternating bands", "tree frog, which is alternating bands"),
        ("antennae", "tree frog, which is antennae"),
        ("mayonnaise", "tree frog, which mayonnaise"),
        ("hasty movements", "tree frog, which hasty movements"),
        ("canopy-dwelling habits", "tree frog, which canopy-dwelling habits"),
        ("used for climbing", "tree frog, which is used for climbing"),
        ("usually green", "tree frog, which has usually green"),
        ("A long, flowing tail", "tree frog, which has A long, flowing tail"),
        ("Has sticky toe pads", "tree frog, which has Has sticky toe pads"),
        ("often found on leaves", "tree frog, which often found on leaves"),
        ("protruding eyes", "tree frog, which has protruding eyes"),
        # Written as given: no whitespace tidying.
        ("  extra   spaces ", "tree frog, which has   extra   spaces "),
    ],
)
def test_release_style_reproduces_the_release(descriptor, prompt):
    assert RELEASE.prompt("tree frog", descriptor) == prompt
    assert IMAGENET.prompt("tree frog", descriptor) == prompt + "."


def test_release_style_names_and_empty_lists():
    plan = build_prompts({"Great_White_Shark": ["a pointed snout"], "eft": [], "newt": ["", "  "]}, "{}.", RELEASE)
    # Underscores read as spaces, nothing else changed; an empty list is one empty descriptor, as the release does.
    assert plan.prompts == (
        "Great White Shark, which is a pointed snout",
        "eft, which has ",
        "newt, which has ",
        "newt, which has   ",
    )
    assert plan.fallback == frozenset() and plan.counts == (1, 1, 2)
    assert template_prompt("Great_White_Shark", "{}.", RELEASE) == "Great White Shark."
    # WaffleCLIP's frame is the same builder with its prefix and suffix.
    waffle = PromptStyle("dclip-release", prefix="A photo of a ", suffix=".")
    assert waffle.prompt("tree frog", "protruding eyes") == "A photo of a tree frog, which has protruding eyes."


def test_descry_style_takes_a_prefix_and_suffix_too():
    style = PromptStyle("descry", prefix="A photo of a ", suffix=".")
    assert style.prompt("tree_frog", "  protruding  eyes") == "A photo of a tree frog, which has protruding eyes."
    with pytest.raises(ValueError, match="not one of descry, dclip-release"):
        PromptStyle("clip")


def test_prompts_command_prints_what_the_encoder_reads(tmp_path, capsys):
    from descriptors.cli import main

    path = tmp_path / "d.json"
    path.write_text(
        '{"tree frog": ["alternating bands", "tab\\there"], "tailed_frog": ["mayonnaise"]}', encoding="utf-8"
    )
    assert main(["prompts", str(path), "--style", "dclip-release", "--suffix", "."]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tree frog\talternating bands\ttree frog, which is alternating bands.",
        "tree frog\ttab\\there\ttree frog, which has tab\\there.",
        "tailed_frog\tmayonnaise\ttailed frog, which mayonnaise.",
    ]
    assert main(["prompts", str(path), "--classes", "tailed frog,newt"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tailed frog\tmayonnaise\ttailed frog, which has mayonnaise",  # named as requested
        "newt\ta photo of a newt.\ta photo of a newt.",
    ]
    assert main(["prompts", str(path), "--template", "no slot"]) == 2
    assert "exactly one" in capsys.readouterr().err
