"""Parity with transformers itself: the engine's numbers are the model's own logits."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from descriptors import build_prompts
from explain import Explainer, load_model
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
    return dict(zip(prompts, logits.tolist(), strict=True))


def reference_kwargs(encoder):
    # SigLIP and SigLIP 2 are trained on text padded to 64 tokens; their reference forward must be fed the same.
    if "siglip" in encoder.model.config.model_type:
        return {"padding": "max_length", "max_length": 64}
    return {"padding": True}


@pytest.mark.parametrize("image", IMAGES, ids=["48x40", "64x64", "30x90"])
def test_descriptor_scores_equal_the_models_logits(family, image):
    encoder = load_model(str(family), device="cpu")
    result = Explainer(encoder).classify(image, FROGS)
    expected = reference_logits(encoder, image, build_prompts(FROGS).prompts, **reference_kwargs(encoder))
    got = engine_scores(result)
    assert got.keys() == expected.keys()
    for prompt, logit in expected.items():
        assert got[prompt] == pytest.approx(logit, abs=1e-4), prompt
    # Spread check: the scores are far apart, so agreement to 1e-4 is not luck.
    assert max(expected.values()) - min(expected.values()) > 1.0


def test_class_score_is_the_mean_of_the_model_logits(clip):
    image = IMAGES[0]
    result = Explainer(clip).classify(image, FROGS)
    expected = reference_logits(clip, image, build_prompts(FROGS).prompts, padding=True)
    for entry in result.predictions:
        logits = [expected[d.prompt] for d in entry.descriptors]
        assert entry.score == pytest.approx(np.mean(logits), abs=1e-4)


@pytest.mark.parametrize("template", ["a photo of a {}.", "itap of a {}"])
def test_baseline_equals_the_zero_shot_pipeline(family, template):
    encoder = load_model(str(family), device="cpu")
    classify = pipeline("zero-shot-image-classification", model=str(family), device="cpu")
    sigmoid = "siglip" in encoder.model.config.model_type
    for image in IMAGES:
        result = Explainer(encoder).classify(image, FROGS, template=template)
        reference = {
            r["label"]: r["score"] for r in classify(image, candidate_labels=list(FROGS), hypothesis_template=template)
        }
        # Under auto, each family's own probabilities: SigLIP's sigmoid per label, the pipeline's as well.
        assert result.to_dict()["probabilities"] == ("sigmoid" if sigmoid else "softmax")
        for entry in result.baseline:
            assert entry.probability == pytest.approx(reference[entry.name], abs=1e-5), entry.name
        if not sigmoid:
            assert sum(entry.probability for entry in result.baseline) == pytest.approx(1.0)
        # Asked for a softmax, SigLIP's ranking is the same and the numbers are normalised over the classes.
        forced = Explainer(encoder, probabilities="softmax").classify(image, FROGS, template=template)
        assert [e.name for e in forced.baseline] == [e.name for e in result.baseline]
        assert sum(entry.probability for entry in forced.baseline) == pytest.approx(1.0)


def test_siglip_scores_include_its_bias(siglip):
    assert siglip.logit_bias == pytest.approx(-12.0)
    assert siglip.logit_scale == pytest.approx(110.0, rel=1e-5)


def test_batching_does_not_change_scores(clip):
    together = Explainer(clip).classify_many(IMAGES, FROGS)
    for image, batched in zip(IMAGES, together, strict=True):
        alone = Explainer(clip).classify(image, FROGS)
        for a, b in zip(alone.predictions, batched.predictions, strict=True):
            assert (a.name, a.score) == (b.name, pytest.approx(b.score, abs=1e-4))
