"""Charts: the right numbers in the right order, readable long text, and markup shown as text."""

import pytest

from explain import Explainer
from explain.charts import contrast_figure, descriptor_figure, ranking_figure, safe
from tests.conftest import random_image
from tests.hand_made import DIRECTIONS, FROGS, HandMadeEncoder


@pytest.fixture
def result():
    return Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS)


def test_safe_escapes_markup_and_wraps():
    assert safe("<b>bold</b> & <script>x</script>", None) == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;"
    wrapped = safe("a very long descriptor that goes on and on about the shape of the animal", 20)
    assert wrapped.count("<br>") >= 3 and all(len(line) <= 20 for line in wrapped.split("<br>"))


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
    assert list(tree.x) == [pytest.approx(6.0), pytest.approx(10.0)]  # best descriptor drawn uppermost
    assert [row[0] for row in tree.customdata] == ["tree frog, which is a bright green colour", "tree frog, which has protruding eyes"]
    assert list(tailed.x) == [pytest.approx(0.0, abs=1e-6)]
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert titles[0].startswith("tree frog: mean 8.00")


def test_markup_in_names_and_descriptors_is_shown_as_text():
    directions = {"<i>newt</i>, which has <b>a crest</b>": [1.0, 0.0], "a photo of a <i>newt</i>.": [1.0, 0.0],
                  "a photo of a toad.": [0.0, 1.0]}  # fmt: skip
    result = Explainer(HandMadeEncoder(directions)).classify(random_image(0), {"<i>newt</i>": ["<b>a crest</b>"], "toad": []})
    descriptors = descriptor_figure(result)
    assert descriptors.layout.yaxis.ticktext[0] == "&lt;b&gt;a crest&lt;/b&gt;"
    assert descriptors.data[0].customdata[0][0] == "&lt;i&gt;newt&lt;/i&gt;, which has &lt;b&gt;a crest&lt;/b&gt;"
    assert descriptors.layout.annotations[0].text.startswith("&lt;i&gt;newt&lt;/i&gt;: mean")
    assert "&lt;i&gt;newt&lt;/i&gt;" in ranking_figure(result).layout.yaxis.ticktext
    assert contrast_figure(result.contrast()).layout.title.text.startswith("&lt;i&gt;newt&lt;/i&gt; vs toad")
    for figure in (descriptors, ranking_figure(result), contrast_figure(result.contrast())):
        assert "<b>" not in figure.to_json() and "<i>" not in figure.to_json()


def test_duplicate_descriptors_keep_separate_bars():
    directions = {"newt, which is a crest": [1.0, 0.0], "a photo of a newt.": [1.0, 0.0]}
    result = Explainer(HandMadeEncoder(directions)).classify(random_image(0), {"newt": ["a crest", "a crest"]})
    bars = descriptor_figure(result).data[0]
    assert len(bars.x) == 2 and len(set(bars.y)) == 2


def test_contrast_bars_add_up_to_each_class_score(result):
    contrast = result.contrast()
    figure = contrast_figure(contrast)
    runner_up, top = figure.data
    assert sum(top.x) == pytest.approx(contrast.top.score)
    assert sum(runner_up.x) == pytest.approx(contrast.runner_up.score, abs=1e-6)
    assert "margin 8.00 − 0.00 = +8.00" in figure.layout.title.text
    assert list(figure.layout.yaxis.ticktext) == ["tail-like extension", "a bright green colour", "protruding eyes"]
