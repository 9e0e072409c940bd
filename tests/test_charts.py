"""Charts: the right numbers beside the right labels, readable at real CLIP scores, one colour per class name.

Every check reads the figure's own data (bar positions, tick positions and texts, hover text), never the
code's intent: a label is beside a bar when the tick at that bar's height says so.
"""

import json
import re

import pytest

from explain import Explainer, charts
from explain.charts import LINE_PX, PALETTE, class_colour, class_colours, headline, reference_score, safe, wrap_chars
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


def checked(chart_function):
    """The chart function, returning plotly's Figure of its chart: every property is checked by plotly, and
    the plain data the page receives must already be in plotly's own terms (no "marker_color" shorthand,
    which only plotly's Python constructors understand: the browser would ignore it)."""

    def draw(*args, **kwargs):
        chart = chart_function(*args, **kwargs)
        figure = chart.figure()
        assert_within(json.loads(chart.to_json()), figure.to_plotly_json(), "figure")
        return figure

    return draw


def assert_within(raw, checked_, where: str) -> None:
    """Every key of the raw chart data is a key plotly kept, at the same place."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            assert isinstance(checked_, dict) and key in checked_, f"{where}.{key} is not a plotly property"
            assert_within(value, checked_[key], f"{where}.{key}")
    elif isinstance(raw, list) and raw and isinstance(raw[0], dict):
        for k, (item, kept) in enumerate(zip(raw, checked_, strict=True)):
            assert_within(item, kept, f"{where}[{k}]")


ranking_figure = checked(charts.ranking_figure)
descriptor_figure = checked(charts.descriptor_figure)
contrast_figure = checked(charts.contrast_figure)
pairs_figure = checked(charts.pairs_figure)
model_comparison_figure = checked(charts.model_comparison_figure)


def axis_span(figure) -> float:
    """The width of a figure's x axis, to see what a difference looks like on it."""
    low, high = figure.layout.xaxis.range
    return high - low


def label_at(axis, y: float) -> str:
    """The tick label drawn at height `y` of a y axis, its line breaks removed."""
    index = min(range(len(axis.tickvals)), key=lambda k: abs(axis.tickvals[k] - y))
    assert abs(axis.tickvals[index] - y) < 1e-6, f"no label at the height of the bar ({y})"
    return axis.ticktext[index].replace("<br>", " ")


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
    assert list(tree.x) == pytest.approx([s - reference for s in sorted(SEED_FROGS["tree frog"].values())[::-1]])
    title = figure.layout.xaxis.title.text.replace("<br>", " ")
    assert f"score − the image's average descriptor score ({reference:.2f})" in title
    # Hover: the absolute score and the difference, rounded to two decimals: never a raw float.
    assert (
        tree.customdata[0]
        == f"tree frog, which has often found on leaves<br>score 25.90, {25.90 - reference:+.2f} against the average"
    )
    assert not any(re.search(r"\d\.\d{4}", text) for trace in figure.data for text in trace.customdata)
    # Protruding eyes (25.54) against tiny eyes (24.09): 1.45 logits, far from invisible.
    assert 1.45 / axis_span(figure) > 0.15


def test_each_block_heading_is_relative_like_its_bars(frogs):
    figure = descriptor_figure(frogs)
    reference = reference_score(frogs)
    tree = next(e for e in frogs.predictions if e.name == "tree frog")
    heading = figure.layout.yaxis.ticktext[-1]
    assert "<b>tree frog</b> · 84%" in heading and f"mean {tree.score - reference:+.2f}" in heading
    assert f"{tree.score:.2f}" not in heading  # no absolute mean beside relative bars


# --- colours: from the class's name, never its rank ---------------------------------------------------------


def test_a_class_keeps_its_colour_through_re_ranks_removals_and_models(frogs):
    flipped = classification_at_scale(
        {"tailed frog": SEED_FROGS["tree frog"], "tree frog": SEED_FROGS["tailed frog"]}, SEED_BASELINE
    )
    assert frogs.predictions[0].name != flipped.predictions[0].name  # the ranks swapped
    for name in ("tree frog", "tailed frog"):
        assert class_colours(frogs)[name] == class_colours(flipped)[name] == class_colour(name)
    more = twenty_classes()
    for entry in more.predictions:
        assert class_colour(entry.name) in PALETTE
    assert class_colour("Tree_Frog") == class_colour("tree frog")  # names match as everywhere else
    # Every chart draws a class in its own colour.
    ranking = ranking_figure(frogs)
    assert list(ranking.data[0].marker.color) == [class_colour(e.name) for e in frogs.predictions]
    assert [t.marker.color for t in descriptor_figure(frogs).data] == [class_colour(e.name) for e in frogs.predictions]
    assert [t.marker.color for t in descriptor_figure(flipped).data] == [
        class_colour(e.name) for e in flipped.predictions
    ]


def test_two_classes_of_one_colour_are_told_apart_by_hatching():
    names = [f"class {k}" for k in range(40)]
    a, b = next((x, y) for x in names for y in names if x != y and class_colour(x) == class_colour(y))
    figure = pairs_figure(a, b, [("x", "y", 25.0, 24.0)], 24.5)
    first, second = figure.data
    assert first.marker.color == second.marker.color and not first.marker.pattern.shape
    assert second.marker.pattern.shape == "/"


# --- labels beside the right bars, never on each other -------------------------------------------------------


def test_each_pair_label_names_exactly_the_bar_beside_it():
    pairs = [("a rounder head", "a flatter head", 24.1, 23.2), ("tufted ears", "no ear tufts", 22.0, 25.5)]
    figure = pairs_figure("lynx", "tree frog", pairs, 23.0)
    for trace, (name, side) in zip(figure.data, (("lynx", 0), ("tree frog", 1)), strict=True):
        for y, x, hover, pair in zip(trace.y, trace.x, trace.customdata, pairs, strict=True):
            assert label_at(figure.layout.yaxis, y) == f"{name}: {pair[side]}"
            assert hover.startswith(f"{name}: {pair[side]}<br>score {pair[2 + side]:.2f}")
            assert x == pytest.approx(pair[2 + side] - 23.0)
    # The first pair on top: lynx's feature, then tree frog's matching one, then the next pair.
    heights = sorted(((y, label_at(figure.layout.yaxis, y)) for t in figure.data for y in t.y), reverse=True)
    assert [label for _, label in heights] == [
        "lynx: a rounder head",
        "tree frog: a flatter head",
        "lynx: tufted ears",
        "tree frog: no ear tufts",
    ]


def test_rows_grow_with_their_labels_and_never_overlap():
    long = "a" + " very long descriptor" * 5  # 106 characters: three or more lines on a narrow chart
    scores = {"newt": {long: 24.0, "a crest": 23.0, "orange belly": 22.5}, "toad": {"warts": 23.5}}
    at_scale = classification_at_scale(scores, {"newt": 23.0, "toad": 22.0})
    for width in (358, 700):
        figure = descriptor_figure(at_scale, width=width)
        axis = figure.layout.yaxis
        ticks = sorted(zip(axis.tickvals, axis.ticktext, strict=True))
        for (low, low_text), (high, high_text) in zip(ticks, ticks[1:], strict=False):
            lines = (low_text.count("<br>") + 1 + high_text.count("<br>") + 1) / 2
            assert high - low >= lines * LINE_PX, f"labels overlap at width {width}: {low_text!r}, {high_text!r}"
        wrapped = next(text for text in axis.ticktext if text.startswith("a very"))
        assert wrapped.count("<br>") >= 2
        assert max(len(line) for line in wrapped.split("<br>")) <= wrap_chars(width)
    assert wrap_chars(358) < wrap_chars(700)  # a wide chart wraps less: labels use the room they have


def test_the_ranking_axis_fits_the_data():
    twenty = twenty_classes()
    figure = ranking_figure(twenty)
    largest = max(max(e.probability for e in twenty.predictions), max(e.probability for e in twenty.baseline))
    assert figure.layout.xaxis.range[1] == pytest.approx(min(1.0, largest * 1.12))
    assert figure.layout.xaxis.range[1] < 0.9  # twenty classes: the bars are not slivers of a 0-100% axis


def test_the_class_being_edited_is_always_shown(frogs):
    twenty = twenty_classes()
    last = twenty.predictions[-1].name
    descriptors = descriptor_figure(twenty, include=last)
    assert len(descriptors.data) == 4 and descriptors.data[-1].marker.color == class_colour(last)
    heading = next(text for text in descriptors.layout.yaxis.ticktext if f"<b>{last}</b>" in text)
    assert "the class you edit" in heading
    lowest_bar = min(descriptors.data[-1].y)
    assert lowest_bar == min(descriptors.layout.yaxis.tickvals)  # its block is the last, below the top three
    ranking = ranking_figure(twenty, top=15, include=last)
    assert len(ranking.data[0].x) == 16 and ranking.layout.yaxis.ticktext[-1] == f"#20 {last}"
    assert len(descriptor_figure(twenty, include=twenty.predictions[0].name).data) == 3  # already shown


# --- numbers and order -----------------------------------------------------------------------------------


def test_ranking_puts_the_best_class_on_top_beside_the_baseline(result):
    figure = ranking_figure(result)
    by_description, baseline = figure.data
    tops = sorted(zip(by_description.y, by_description.x, strict=True), reverse=True)
    assert [x for _, x in tops] == [pytest.approx(p.probability) for p in result.predictions]
    assert [label_at(figure.layout.yaxis, y - 5) for y, _ in tops] == [p.name for p in result.predictions]
    baseline_by_name = {b.name: b.probability for b in result.baseline}
    assert list(baseline.x) == [pytest.approx(baseline_by_name[p.name]) for p in result.predictions]


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
    assert list(tree.x) == [pytest.approx(10.0 - reference), pytest.approx(6.0 - reference)]  # best first, on top
    assert tree.y[0] > tree.y[1]
    assert [text.split("<br>")[0] for text in tree.customdata] == [
        "tree frog, which has protruding eyes",
        "tree frog, which is a bright green colour",
    ]
    assert [label_at(figure.layout.yaxis, y) for y in tree.y] == ["protruding eyes", "a bright green colour"]
    assert list(tailed.x) == [pytest.approx(-reference)]
    assert figure.layout.yaxis.ticktext[-1] == (
        f'<span style="color:{class_colour("tree frog")}"><b>tree frog</b> · 100.0%<br>mean +2.67</span>'
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
    assert "&lt;b&gt;a crest&lt;/b&gt;" in descriptors.layout.yaxis.ticktext
    assert descriptors.data[0].customdata[0].startswith("&lt;i&gt;newt&lt;/i&gt;, which has &lt;b&gt;a crest&lt;/b&gt;")
    assert "<b>&lt;i&gt;newt&lt;/i&gt;</b> · " in descriptors.layout.yaxis.ticktext[-1]
    assert "&lt;i&gt;newt&lt;/i&gt;" in ranking_figure(result).layout.yaxis.ticktext
    contrast = contrast_figure(result.contrast())
    assert contrast.layout.title.text.startswith("Why &lt;i&gt;newt&lt;/i&gt; and not toad")
    pairs = pairs_figure("<i>newt</i>", "toad", [("<b>x</b>", "y", 1.0, 0.0)], 0.0)
    for figure in (descriptors, ranking_figure(result), contrast, pairs):
        text = figure.to_json()
        assert "<i>" not in text and "<b>a crest" not in text and "<b>x" not in text  # only the charts' own markup


def test_duplicate_descriptors_keep_separate_bars():
    directions = {"newt, which is a crest": [1.0, 0.0], "a photo of a newt.": [1.0, 0.0]}
    result = Explainer(HandMadeEncoder(directions)).classify(random_image(0), {"newt": ["a crest", "a crest"]})
    bars = descriptor_figure(result).data[0]
    assert len(bars.x) == 2 and len(set(bars.y)) == 2


def test_contrast_bars_add_up_to_the_margin(frogs):
    contrast = frogs.contrast()
    reference = reference_score(frogs)
    figure = contrast_figure(contrast, reference)
    top, runner_up, top_sum, runner_sum = figure.data
    assert sum(top.x) == pytest.approx(contrast.top.score - reference)
    assert sum(runner_up.x) == pytest.approx(contrast.runner_up.score - reference)
    assert top_sum.x[0] == pytest.approx(contrast.top.score - reference)
    assert top_sum.x[0] - runner_sum.x[0] == pytest.approx(contrast.margin)  # the reference cancels
    assert "a margin of 1.68 in score" in figure.layout.title.text.replace("<br>", " ")
    assert label_at(figure.layout.yaxis, top_sum.y[0]) == "<b>tree frog</b> all descriptors"
    for trace, side in ((top, contrast.top), (runner_up, contrast.runner_up)):
        assert [label_at(figure.layout.yaxis, y) for y in trace.y] == [d.descriptor for d in side.descriptors]


def test_model_comparison_names_models_as_the_page_does(frogs):
    other = classification_at_scale(
        {name: {d: s + (1.0 if "eyes" in d else 0.0) for d, s in v.items()} for name, v in SEED_FROGS.items()},
        SEED_BASELINE,
    )
    figure = model_comparison_figure(
        {"/models/very/long/clip": frogs, "/models/other": other},
        labels={"/models/very/long/clip": "clip", "/models/other": "other"},
    )
    assert [trace.name for trace in figure.data] == ["clip", "other"]
    differences = [abs(a - b) for a, b in zip(figure.data[0].x, figure.data[1].x, strict=True)]
    assert differences[0] == max(differences)  # the largest disagreement first, on top
    assert figure.data[0].y[0] == max(figure.data[0].y)


def test_the_contrast_is_drawn_from_its_two_classes_alone(frogs):
    contrast = frogs.contrast()
    pair = sum(sum(v.values()) for v in SEED_FROGS.values()) / 8
    assert charts.pair_reference(contrast) == pytest.approx(pair)
    figure = contrast_figure(contrast)
    top = figure.data[0]
    assert list(top.x) == pytest.approx([(d.score - pair) / 4 for d in contrast.top.descriptors])
    assert f"the two classes' average {pair:.2f}" in figure.layout.xaxis.title.text.replace("<br>", " ")
