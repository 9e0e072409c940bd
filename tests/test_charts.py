"""Charts: the right numbers in the right order, readable at real CLIP scores, one colour per class, markup as text."""

import pytest

from explain import Explainer
from explain.charts import (
    CLASS_COLOURS,
    class_colours,
    contrast_figure,
    descriptor_figure,
    headline,
    ranking_figure,
    reference_score,
    safe,
)
from tests.conftest import random_image
from tests.hand_made import (
    DIRECTIONS,
    FROGS,
    SEED_BASELINE,
    SEED_FROGS,
    HandMadeEncoder,
    classification_at_scale,
    twenty_classes,
)


def axis_span(figure) -> float:
    """The width of a figure's x axis, to see what a difference looks like on it."""
    low, high = figure.layout.xaxis.range
    return high - low


@pytest.fixture
def result():
    return Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS)


@pytest.fixture
def frogs():
    return classification_at_scale(SEED_FROGS, SEED_BASELINE)


def test_safe_escapes_markup_and_wraps():
    assert (
        safe("<b>bold</b> & <script>x</script>", None) == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;"
    )
    wrapped = safe("a very long descriptor that goes on and on about the shape of the animal", 20)
    assert wrapped.count("<br>") >= 3 and all(len(line) <= 20 for line in wrapped.split("<br>"))


def test_headline_names_the_choice_and_the_templates(frogs):
    # tree frog's mean 23.88 beats tailed frog's 22.20; the template alone prefers tailed frog.
    assert headline(frogs) == "tree frog 84% · the template alone says tailed frog 69%"
    agreeing = classification_at_scale(SEED_FROGS, {"tree frog": 25.0, "tailed frog": 20.0})
    assert headline(agreeing) == "tree frog 84% · the template alone agrees (99.3%)"


# --- real scale: a 0.5-logit difference must be visible -------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: classification_at_scale(SEED_FROGS, SEED_BASELINE), twenty_classes], ids=["seed-frogs", "twenty"]
)
def test_half_a_logit_spans_at_least_five_percent_of_the_axis(make):
    at_scale = make()
    descriptors = descriptor_figure(at_scale)
    assert 0.5 / axis_span(descriptors) >= 0.05
    contrast = contrast_figure(at_scale.contrast(), reference_score(at_scale))
    # A margin of 0.5 is a difference of 0.5 between the two "all descriptors" bars.
    assert 0.5 / axis_span(contrast) >= 0.05
    # Drawn from zero, the same difference would be a sliver of the axis.
    highest = max(d.score for entry in at_scale.predictions for d in entry.descriptors)
    assert 0.5 / highest < 0.025


def test_descriptor_bars_are_relative_to_the_stated_reference(frogs):
    reference = reference_score(frogs)
    assert reference == pytest.approx(sum(sum(v.values()) for v in SEED_FROGS.values()) / 8)
    figure = descriptor_figure(frogs)
    tree, tailed = figure.data
    assert list(tree.x) == pytest.approx([s - reference for s in sorted(SEED_FROGS["tree frog"].values())])
    assert [row[1] for row in tree.customdata] == pytest.approx(
        sorted(SEED_FROGS["tree frog"].values())
    )  # hover: absolute
    assert f"score − {reference:.2f}<br>({reference:.2f}: the image's mean)" in figure.layout.xaxis.title.text
    # Protruding eyes (25.54) against tiny eyes (24.09): 1.45 logits, far from invisible.
    assert 1.45 / axis_span(figure) > 0.15


def test_one_colour_per_class_in_every_chart(frogs):
    colours = class_colours(frogs)
    assert colours == {"tree frog": CLASS_COLOURS[0], "tailed frog": CLASS_COLOURS[1]}
    ranking = ranking_figure(frogs)
    assert list(ranking.data[0].marker.color) == [colours["tailed frog"], colours["tree frog"]]  # bottom to top
    assert list(ranking.data[1].marker.color) == list(ranking.data[0].marker.color)  # the template's bars too
    descriptors = descriptor_figure(frogs)
    assert [trace.marker.color for trace in descriptors.data] == [colours["tree frog"], colours["tailed frog"]]
    contrast = contrast_figure(frogs.contrast(), reference_score(frogs))
    assert [trace.marker.color for trace in contrast.data[:2]] == [colours["tailed frog"], colours["tree frog"]]


def test_class_headings_sit_above_their_bars_never_on_them(frogs):
    figure = descriptor_figure(frogs)
    for axis, name in ((figure.layout.yaxis, "tree frog"), (figure.layout.yaxis2, "tailed frog")):
        *bars, heading = axis.tickvals
        assert name in axis.ticktext[-1] and f"color:{class_colours(frogs)[name]}" in axis.ticktext[-1]
        assert heading > max(bars) + 0.5 and axis.range[1] > heading  # its own row, above the bars, inside the block
    assert figure.layout.yaxis2.domain[1] < figure.layout.yaxis.domain[0]  # blocks do not overlap
    assert not figure.layout.annotations


# --- numbers and order -----------------------------------------------------------------------------------


def test_ranking_puts_the_best_class_on_top_beside_the_baseline(result):
    figure = ranking_figure(result)
    by_description, baseline = figure.data
    assert list(figure.layout.yaxis.ticktext) == ["tailed frog", "tree frog"]  # drawn bottom to top
    assert list(by_description.x) == [pytest.approx(p.probability) for p in result.predictions[::-1]]
    baseline_by_name = {b.name: b.probability for b in result.baseline}
    assert list(baseline.x) == [pytest.approx(baseline_by_name[p.name]) for p in result.predictions[::-1]]


def test_ranking_of_many_classes_says_how_many_are_shown():
    encoder = HandMadeEncoder({f"a photo of a class {i}.": [1.0, i / 10] for i in range(40)})
    many = Explainer(encoder).classify(random_image(0), {f"class {i}": [] for i in range(40)})
    figure = ranking_figure(many, top=15)
    assert "top 15 of 40" in figure.layout.title.text and len(figure.data[0].x) == 15


def test_descriptor_bars_per_class_with_scores_and_prompts(result):
    figure = descriptor_figure(result, classes=2)
    tree, tailed = figure.data
    reference = reference_score(result)  # (10 + 6 + 0) / 3
    assert reference == pytest.approx(16 / 3)
    assert list(tree.x) == [pytest.approx(6.0 - reference), pytest.approx(10.0 - reference)]  # best uppermost
    assert [row[0] for row in tree.customdata] == [
        "tree frog, which is a bright green colour",
        "tree frog, which has protruding eyes",
    ]
    assert list(tailed.x) == [pytest.approx(-reference)]
    assert (
        figure.layout.yaxis.ticktext[-1]
        == f'<span style="color:{CLASS_COLOURS[0]}"><b>tree frog</b><br>mean 8.00 · p 100.0%</span>'
    )


def test_markup_in_names_and_descriptors_is_shown_as_text():
    directions = {
        "<i>newt</i>, which has <b>a crest</b>": [1.0, 0.0],
        "a photo of a <i>newt</i>.": [1.0, 0.0],
        "a photo of a toad.": [0.0, 1.0],
    }
    result = Explainer(HandMadeEncoder(directions)).classify(
        random_image(0), {"<i>newt</i>": ["<b>a crest</b>"], "toad": []}
    )
    descriptors = descriptor_figure(result)
    assert descriptors.layout.yaxis.ticktext[0] == "&lt;b&gt;a crest&lt;/b&gt;"
    assert descriptors.data[0].customdata[0][0] == "&lt;i&gt;newt&lt;/i&gt;, which has &lt;b&gt;a crest&lt;/b&gt;"
    assert "<b>&lt;i&gt;newt&lt;/i&gt;</b><br>mean" in descriptors.layout.yaxis.ticktext[-1]
    assert "&lt;i&gt;newt&lt;/i&gt;" in ranking_figure(result).layout.yaxis.ticktext
    contrast = contrast_figure(result.contrast())
    assert contrast.layout.title.text.startswith("Why &lt;i&gt;newt&lt;/i&gt; and not toad")
    for figure in (descriptors, ranking_figure(result), contrast):
        text = figure.to_json()
        assert "<i>" not in text and "<b>a crest" not in text  # only the charts' own bold titles are markup


def test_duplicate_descriptors_keep_separate_bars():
    directions = {"newt, which is a crest": [1.0, 0.0], "a photo of a newt.": [1.0, 0.0]}
    result = Explainer(HandMadeEncoder(directions)).classify(random_image(0), {"newt": ["a crest", "a crest"]})
    bars = descriptor_figure(result).data[0]
    assert len(bars.x) == 2 and len(set(bars.y)) == 2


def test_contrast_bars_add_up_to_the_margin(frogs):
    contrast = frogs.contrast()
    reference = reference_score(frogs)
    figure = contrast_figure(contrast, reference)
    runner_up, top, sums = figure.data
    assert sum(top.x) == pytest.approx(contrast.top.score - reference)
    assert sum(runner_up.x) == pytest.approx(contrast.runner_up.score - reference)
    assert list(sums.x) == pytest.approx([contrast.runner_up.score - reference, contrast.top.score - reference])
    assert sums.x[1] - sums.x[0] == pytest.approx(contrast.margin)  # the reference cancels
    assert "margin +1.68" in figure.layout.title.text
    assert figure.layout.yaxis.ticktext[-1] == "<b>tree frog</b><br>all descriptors"
