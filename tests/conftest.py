"""Shared fixtures: offline tiny models, sample images, and caches kept inside tmp_path."""

import os

# No weights can be downloaded in tests; this must be set before transformers is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
from PIL import Image

from explain import load_model
from tests.tiny_models import save_tiny_align, save_tiny_altclip, save_tiny_clip, save_tiny_siglip, save_tiny_siglip2

FROGS = {
    "tree frog": ["protruding eyes", "a bright green colour", "sticky toe pads", "often found on leaves"],
    "tailed frog": ["a short tail-like extension", "flattened body", "used to fast-flowing streams"],
    "bullfrog": ["large round eardrums", "olive green skin", "has a deep call", "can be very large"],
}


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("DESCRY_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory):
    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


FAMILIES = {
    "clip": save_tiny_clip,
    "siglip": save_tiny_siglip,
    "siglip2": save_tiny_siglip2,
    "align": save_tiny_align,
    "altclip": save_tiny_altclip,
}


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """A saved tiny checkpoint of each supported model family, in turn."""
    return FAMILIES[request.param](tmp_path_factory.mktemp(f"tiny-{request.param}"))


@pytest.fixture(scope="session")
def clip(clip_dir):
    return load_model(str(clip_dir), device="cpu")


@pytest.fixture(scope="session")
def siglip(siglip_dir):
    return load_model(str(siglip_dir), device="cpu")


def random_image(seed: int, size=(48, 40)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.fixture
def image_files(tmp_path):
    """Three small images on disk: two PNGs and a JPEG."""
    paths = []
    for seed, suffix in [(1, ".png"), (2, ".png"), (3, ".jpg")]:
        path = tmp_path / f"img{seed}{suffix}"
        random_image(seed).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def frog_file(tmp_path):
    import json

    path = tmp_path / "frogs.json"
    path.write_text(json.dumps(FROGS))
    return path


def label(data, out, model, descriptors=FROGS, recipe=None, **options):
    """label_collection with a recipe of `model` and `descriptors` (plus `recipe`) and RunOptions(**options)."""
    options.setdefault("workers", 0)
    from explain.labelling import LabelRecipe, RunOptions, label_collection

    return label_collection(data, LabelRecipe(str(model), descriptors, **(recipe or {})), out, RunOptions(**options))
