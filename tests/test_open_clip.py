"""The OpenCLIP backend: tiny models saved as open_clip saves them, loaded by Descry's own loader, checked
against open_clip's own forward pass; the name forms and their errors; caches kept apart by backend."""

import numpy as np
import open_clip  # a requirement: CI runs these tests, never skips them
import pytest
import torch

from explain import EmbeddingStore, Explainer, ModelLoadError, load_model
from explain.datasets import load_dataset
from explain.evaluate import PromptRecipe, run_evaluation
from tests.conftest import FROGS, random_image
from tests.tiny_models import save_tiny_open_clip

TOWERS = ["quickgelu", "bias", "timm", "coca", "coca-parallel", "eva", "siglip", "timm-token"]


@pytest.fixture(scope="module", params=TOWERS)
def open_clip_dir(request, tmp_path_factory):
    return save_tiny_open_clip(tmp_path_factory.mktemp("oc") / request.param, request.param)


def reference_scores(folder, image, prompts):
    """open_clip's own calls: logit_scale.exp() * normalize(encode_image) @ normalize(encode_text).T + logit_bias."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(preprocess(image)[None]).reshape(1, -1)  # CoCa "parallel": [1, 1, dim]
        image_features = torch.nn.functional.normalize(image_features, dim=-1)
        text_features = torch.nn.functional.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        if getattr(model, "logit_bias", None) is not None:
            logits = logits + model.logit_bias
    return logits[0].numpy()


def test_every_descriptor_score_equals_open_clips_own_forward(open_clip_dir):
    encoder = load_model(str(open_clip_dir), device="cpu")
    assert encoder.backend == "open_clip"
    image = random_image(3, size=(48, 40))
    result = Explainer(encoder).classify(image, FROGS)
    ours = {d.prompt: d.score for entry in result.predictions for d in entry.descriptors}
    expected = reference_scores(open_clip_dir, image, list(ours))
    np.testing.assert_allclose([ours[p] for p in ours], expected, atol=1e-4)
    assert result.predictions[0].score >= result.predictions[-1].score


def test_logit_scale_is_stored_as_a_log_and_the_bias_is_used(tmp_path):
    biased = load_model(str(save_tiny_open_clip(tmp_path / "bias", "bias")), device="cpu")
    assert biased.logit_scale == pytest.approx(np.exp(2.3), rel=1e-5) and biased.logit_bias == pytest.approx(-10.0)
    assert biased.sigmoid_loss  # a sigmoid-loss model: its own probabilities are sigmoids
    plain = load_model(str(save_tiny_open_clip(tmp_path / "plain", "quickgelu")), device="cpu")
    assert plain.logit_scale == pytest.approx(1 / 0.07, rel=1e-5) and plain.logit_bias == 0.0
    assert plain.max_text_length == 16 and not plain.sigmoid_loss  # its own context length; a softmax model


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("open_clip:ViT-B-61/openai", r"open_clip has no architecture 'ViT-B-61'; did you mean .*ViT-B-16"),
        ("open_clip:ViT-B-16/dfn2", r"no pretrained tag 'dfn2' for ViT-B-16; its tags include .*dfn2b"),
        ("open_clip:ViT-B-16", r"name a pretrained tag: open_clip:ViT-B-16/TAG"),
        ("hf-hub:nobody-here/no-such-repo", r"cannot load model 'hf-hub:nobody-here/no-such-repo'"),
    ],
)
def test_name_forms_and_their_errors(name, message):
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_model(name, device="cpu")
    assert "\n" not in str(caught.value)


def test_quickgelu_weights_get_the_quickgelu_architecture():
    from explain.models.open_clip_backend import _checked_arch_and_tag

    notes = []
    assert _checked_arch_and_tag(open_clip, "ViT-B-16", "dfn2b", notes) == ("ViT-B-16-quickgelu", "dfn2b")
    assert "trained with QuickGELU" in notes[0]
    assert _checked_arch_and_tag(open_clip, "EVA02-B-16", "merged2b_s8b_b131k", []) == (
        "EVA02-B-16",
        "merged2b_s8b_b131k",
    )


def test_folders_go_to_the_backend_that_saved_them(clip_dir, tmp_path):
    assert load_model(str(clip_dir), device="cpu").backend == "transformers"
    assert load_model(str(save_tiny_open_clip(tmp_path / "oc")), device="cpu").backend == "open_clip"


def test_the_cache_never_mixes_two_backends(clip_dir, tmp_path):
    store = EmbeddingStore(tmp_path / "cache.sqlite3")
    first = Explainer(load_model(str(clip_dir), device="cpu"), store=store)
    second = Explainer(load_model(str(save_tiny_open_clip(tmp_path / "oc")), device="cpu"), store=store)
    assert first.model.key.startswith("transformers:") and second.model.key.startswith("open_clip:")
    first.classify(random_image(1), FROGS)
    second.classify(random_image(1), FROGS)
    assert second.texts_encoded == first.texts_encoded and second.images_encoded == 1  # nothing borrowed


def test_evaluation_runs_on_an_open_clip_model(tmp_path):
    root = tmp_path / "data"
    for name in ("tree frog", "tailed frog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            random_image(10 * len(name) + i).save(root / name / f"{i}.png")
    encoder = load_model(str(save_tiny_open_clip(tmp_path / "oc", "timm")), device="cpu")
    run = run_evaluation(
        load_dataset(root), FROGS, {"oc": Explainer(encoder)}, PromptRecipe(waffle_pairs=2), None, workers=2
    )
    assert run.metrics["oc"]["descriptors"]["n_samples"] == 6 and not run.unreadable
