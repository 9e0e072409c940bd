"""Parity with transformers itself: the engine's numbers are the model's own logits."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from descriptors import build_prompts
from explain import Explainer
from tests.conftest import FROGS, random_image

IMAGES = [random_image(seed, size) for seed, size in [(10, (48, 40)), (11, (64, 64)), (12, (30, 90))]]


def engine_scores(result):
    """prompt -> descriptor score, from the engine's records."""
    return {d.prompt: d.score for entry in result.predictions for d in entry.descriptors}


def reference_logits(encoder, image, prompts, **text_kwargs):
    """transformers' own forward pass: logits_per_image for one image and all prompts."""
    inputs = encoder.processor(text=list(prompts), images=image, return_tensors="pt", **text_kwargs)
    with torch.no_grad():
        logits = encoder.model(**inputs).logits_per_image[0]
    return dict(zip(prompts, logits.tolist()))


@pytest.mark.parametrize("image", IMAGES, ids=["48x40", "64x64", "30x90"])
def test_descriptor_scores_equal_clip_logits(clip, image):
    result = Explainer(clip).classify(image, FROGS)
    expected = reference_logits(clip, image, build_prompts(FROGS).prompts, padding=True)
    got = engine_scores(result)
    assert got.keys() == expected.keys()
    for prompt, logit in expected.items():
        assert got[prompt] == pytest.approx(logit, abs=1e-4), prompt
    # Spread check: with a logit scale of 100 the scores are far apart, so agreement is not luck.
    assert max(expected.values()) - min(expected.values()) > 1.0


def test_class_score_is_the_mean_of_the_model_logits(clip):
    image = IMAGES[0]
    result = Explainer(clip).classify(image, FROGS)
    expected = reference_logits(clip, image, build_prompts(FROGS).prompts, padding=True)
    for entry in result.predictions:
        logits = [expected[d.prompt] for d in entry.descriptors]
        assert entry.score == pytest.approx(np.mean(logits), abs=1e-4)


@pytest.mark.parametrize("template", ["a photo of a {}.", "itap of a {}"])
def test_baseline_equals_the_zero_shot_pipeline(clip_dir, clip, template):
    classify = pipeline("zero-shot-image-classification", model=str(clip_dir), device="cpu")
    classes = list(FROGS)
    for image in IMAGES:
        result = Explainer(clip).classify(image, FROGS, template=template)
        reference = classify(image, candidate_labels=classes, hypothesis_template=template)
        assert [r["label"] for r in reference] == [b.name for b in result.baseline]
        for ours, theirs in zip(result.baseline, reference):
            assert ours.probability == pytest.approx(theirs["score"], abs=1e-5)


def test_siglip_scores_include_its_bias(siglip):
    assert siglip.logit_bias == pytest.approx(-12.0)
    image = IMAGES[1]
    result = Explainer(siglip).classify(image, FROGS)
    # SigLIP is trained on text padded to 64 tokens; its reference forward must be fed the same.
    expected = reference_logits(siglip, image, build_prompts(FROGS).prompts, padding="max_length", max_length=64)
    got = engine_scores(result)
    for prompt, logit in expected.items():
        assert got[prompt] == pytest.approx(logit, abs=1e-4), prompt


def test_siglip_baseline_matches_the_pipelines_sigmoid(siglip_dir, siglip):
    classify = pipeline("zero-shot-image-classification", model=str(siglip_dir), device="cpu")
    image = IMAGES[2]
    result = Explainer(siglip).classify(image, FROGS)
    reference = {r["label"]: r["score"] for r in classify(image, candidate_labels=list(FROGS), hypothesis_template="a photo of a {}.")}
    for entry in result.baseline:
        # The pipeline reports SigLIP's independent sigmoid of the same logit we rank by.
        assert 1 / (1 + np.exp(-entry.score)) == pytest.approx(reference[entry.name], abs=1e-6)
    assert sum(entry.probability for entry in result.baseline) == pytest.approx(1.0)


def test_batching_does_not_change_scores(clip):
    together = Explainer(clip).classify_many(IMAGES, FROGS)
    for image, batched in zip(IMAGES, together):
        alone = Explainer(clip).classify(image, FROGS)
        for a, b in zip(alone.predictions, batched.predictions):
            assert (a.name, a.score) == (b.name, pytest.approx(b.score, abs=1e-4))
