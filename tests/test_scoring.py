"""Aggregation maths on hand-made embeddings: numbers you can check on paper."""

import math

import numpy as np
import pytest

from descriptors import DescriptorError
from explain import Explainer
from explain.scoring import class_scores, descriptor_scores, normalise, softmax
from tests.conftest import random_image
from tests.hand_made import DIRECTIONS, FROGS, HandMadeEncoder


def test_descriptor_scores_are_scaled_cosines():
    image = normalise(np.array([[3.0, 4.0]]))  # -> [0.6, 0.8]
    prompts = normalise(np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, -4.0]]))
    scores = descriptor_scores(image, prompts, logit_scale=100.0)
    np.testing.assert_allclose(scores, [[60.0, 80.0, -100.0]], rtol=1e-6)
    np.testing.assert_allclose(descriptor_scores(image, prompts, 10.0, logit_bias=-5.0), [[1.0, 3.0, -15.0]], rtol=1e-6)


def test_class_scores_are_means_of_contiguous_groups():
    scores = np.array([[1.0, 2.0, 3.0, 10.0, 4.0, 6.0], [0.0, 0.0, 3.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(class_scores(scores, [3, 1, 2]), [[2.0, 10.0, 5.0], [1.0, 1.0, 1.0]])


@pytest.mark.parametrize("counts", [[2, 2], [3, 0, 2], []])
def test_class_scores_reject_bad_layouts(counts):
    with pytest.raises(ValueError):
        class_scores(np.zeros((1, 5)), counts)


def test_softmax_is_stable_and_sums_to_one():
    probabilities = softmax(np.array([1000.0, 1000.0 + math.log(3.0)]))
    np.testing.assert_allclose(probabilities, [0.25, 0.75])
    assert softmax(np.array([[1.0, 2.0], [3.0, 4.0]])).sum(axis=-1) == pytest.approx([1.0, 1.0])


def test_normalise_leaves_zero_rows_finite():
    out = normalise(np.array([[0.0, 0.0], [0.0, 5.0]]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], [0.0, 1.0])


def test_classification_by_hand():
    result = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS, name="frog.png")
    top, second = result.predictions
    assert (top.name, top.score, second.name, second.score) == (
        "tree frog",
        pytest.approx(8.0),
        "tailed frog",
        pytest.approx(0.0),
    )
    assert top.probability == pytest.approx(1 / (1 + math.exp(-8.0)))
    assert [(d.descriptor, d.score) for d in top.descriptors] == [
        ("protruding eyes", pytest.approx(10.0)),
        ("a bright green colour", pytest.approx(6.0)),
    ]
    assert top.descriptors[1].prompt == "tree frog, which is a bright green colour"
    assert [(b.name, b.score) for b in result.baseline] == [
        ("tree frog", pytest.approx(8.0)),
        ("tailed frog", pytest.approx(6.0)),
    ]
    assert result.baseline[0].probability == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert result.image == "frog.png" and result.model == "hand-made"


def test_contrast_margin_is_the_sum_of_contributions():
    contrast = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS).contrast()
    assert contrast.margin == pytest.approx(8.0)
    top = [c for _, c in contrast.contributions(contrast.top)]
    runner_up = [c for _, c in contrast.contributions(contrast.runner_up)]
    assert top == [pytest.approx(5.0), pytest.approx(3.0)]
    assert runner_up == [pytest.approx(0.0, abs=1e-6)]
    assert sum(top) - sum(runner_up) == pytest.approx(contrast.margin)
    record = contrast.to_dict()
    assert record["top"]["class"] == "tree frog" and record["runner_up"]["class"] == "tailed frog"
    assert record["top"]["descriptors"][0] == {
        "descriptor": "protruding eyes",
        "prompt": "tree frog, which has protruding eyes",
        "score": pytest.approx(10.0),
        "contribution": pytest.approx(5.0),
    }


def test_contrast_needs_two_classes():
    result = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), {"tree frog": ["protruding eyes"]})
    assert result.predictions[0].probability == 1.0
    with pytest.raises(ValueError, match="at least two classes"):
        result.contrast()


def test_bias_shifts_scores_but_not_probabilities():
    plain = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS)
    biased = Explainer(HandMadeEncoder(DIRECTIONS, logit_bias=-2.5)).classify(random_image(0), FROGS)
    for a, b in zip(plain.predictions, biased.predictions, strict=True):
        assert b.score == pytest.approx(a.score - 2.5)
        assert b.probability == pytest.approx(a.probability)


def test_class_without_descriptors_is_scored_by_its_template():
    result = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), {**FROGS, "newt": []})
    newt = result.predictions[-1]
    assert newt.name == "newt" and newt.fallback and newt.score == pytest.approx(-10.0)
    assert [(d.descriptor, d.prompt) for d in newt.descriptors] == [("a photo of a newt.", "a photo of a newt.")]
    assert result.fallback_classes == ["newt"]
    assert result.to_dict()["predictions"][-1]["fallback"] is True


def test_json_record_shape_and_order():
    record = Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), FROGS, name="frog.png").to_dict()
    assert set(record) == {
        "image", "model", "probabilities", "temperature", "calibrated", "precision", "predictions", "baseline"
    }  # fmt: skip
    assert (record["probabilities"], record["temperature"], record["calibrated"]) == ("softmax", 1.0, False)
    assert set(record["predictions"][0]) == {"class", "score", "probability", "descriptors", "fallback"}
    assert set(record["baseline"][0]) == {"class", "score", "probability"}
    for key in ("predictions", "baseline"):
        scores = [entry["score"] for entry in record[key]]
        assert scores == sorted(scores, reverse=True)
    assert record["predictions"][0]["descriptors"][0]["score"] >= record["predictions"][0]["descriptors"][1]["score"]


def test_shared_prompts_are_encoded_once():
    encoder = HandMadeEncoder(DIRECTIONS)
    # "newt" falls back to its template, which is also its baseline prompt: one encoding serves both.
    Explainer(encoder).classify(random_image(0), {"newt": [], "tree frog": ["protruding eyes"]})
    assert sorted(encoder.text_calls[0]) == [
        "a photo of a newt.",
        "a photo of a tree frog.",
        "tree frog, which has protruding eyes",
    ]


def test_no_classes_is_an_error():
    with pytest.raises(DescriptorError, match="class list is empty"):
        Explainer(HandMadeEncoder(DIRECTIONS)).classify(random_image(0), {})
