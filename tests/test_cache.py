"""Caching: one edit re-encodes one prompt, images are keyed by content, memory is bounded, disk persists."""

import numpy as np
import pytest

from explain import EmbeddingStore, Explainer, load_model
from explain.cache import EmbeddingLRU
from tests.conftest import FROGS, random_image


class CountingEncoder:
    """Wraps a real EncoderModel and records every prompt and image it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.prompts, self.images = [], 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_texts(self, prompts, progress=None):
        self.prompts.extend(prompts)
        return self.inner.encode_texts(prompts, progress=progress)

    def encode_images(self, images):
        self.images += len(images)
        return self.inner.encode_images(images)


def test_editing_one_descriptor_encodes_only_that_prompt(clip):
    encoder = CountingEncoder(clip)
    explainer = Explainer(encoder)
    image = random_image(5)
    explainer.classify(image, FROGS)
    assert encoder.images == 1
    first_round = len(encoder.prompts)
    assert first_round == sum(len(v) for v in FROGS.values()) + len(FROGS)  # descriptors + one template per class

    edited = {**FROGS, "tree frog": ["bulging eyes", *FROGS["tree frog"][1:]]}
    result = explainer.classify(random_image(5), edited)  # same pixels, new object
    assert encoder.prompts[first_round:] == ["tree frog, which has bulging eyes"]
    assert encoder.images == 1
    assert explainer.texts_encoded == first_round + 1 and explainer.images_encoded == 1
    assert "bulging eyes" in {d.descriptor for entry in result.predictions for d in entry.descriptors}


def test_cached_and_fresh_scores_agree(clip):
    explainer = Explainer(clip)
    image = random_image(6)
    first = explainer.classify(image, FROGS)
    again = explainer.classify(image, FROGS)
    assert first == again
    assert Explainer(clip).classify(image, FROGS) == first


def test_different_pixels_are_encoded_separately(clip):
    encoder = CountingEncoder(clip)
    explainer = Explainer(encoder)
    a = explainer.classify(random_image(7), FROGS)
    b = explainer.classify(random_image(8), FROGS)
    assert encoder.images == 2
    assert a.predictions[0].score != b.predictions[0].score


def test_lru_is_bounded_by_bytes_and_evicts_the_least_recent():
    lru = EmbeddingLRU(max_bytes=3 * 16)  # room for three 4-float vectors
    for key in "abc":
        lru.put("m", key, np.full(4, ord(key), np.float32))
    assert lru.get("m", "a") is not None  # "a" is now the most recent
    lru.put("m", "d", np.zeros(4, np.float32))
    assert lru.get("m", "b") is None
    assert [lru.get("m", k) is not None for k in "acd"] == [True, True, True]
    assert len(lru) == 3 and lru.nbytes == 48
    lru.put("m", "huge", np.zeros(100, np.float32))  # larger than the whole cache: not kept
    assert lru.get("m", "huge") is None and len(lru) == 3
    lru.put("other-model", "a", np.ones(4, np.float32))  # same key, other namespace: a separate entry
    assert lru.get("other-model", "a")[0] == 1.0
    assert lru.get("m", "a") is None  # it was the least recent after the reads above, so it went
    assert lru.get("m", "d") is not None


def test_explainer_memory_stays_within_its_bound(clip):
    explainer = Explainer(clip, text_cache_bytes=10 * clip.dim * 4)
    explainer.classify(random_image(1), {f"class {i}": [f"feature {j}" for j in range(5)] for i in range(6)})
    assert explainer._texts.nbytes <= 10 * clip.dim * 4
    assert len(explainer._texts) == 10


def test_cached_vectors_are_read_only(clip):
    explainer = Explainer(clip)
    vectors = explainer.text_embeddings(["a photo of a newt."])
    cached = explainer.text_embeddings(["a photo of a newt."])
    np.testing.assert_array_equal(vectors, cached)
    with pytest.raises(ValueError):
        explainer._texts.get(clip.key, "a photo of a newt.")[0] = 1.0


def test_disk_store_survives_a_new_explainer_and_process(clip_dir, tmp_path):
    store_path = tmp_path / "embeddings.sqlite3"
    image = random_image(9)
    first = Explainer(load_model(str(clip_dir)), store=EmbeddingStore(store_path))
    expected = first.classify(image, FROGS)
    assert first.texts_encoded > 0 and first.images_encoded == 1

    encoder = CountingEncoder(load_model(str(clip_dir)))  # a fresh load, as in a new process
    second = Explainer(encoder, store=EmbeddingStore(store_path))
    result = second.classify(image, FROGS)
    assert encoder.prompts == [] and encoder.images == 0
    for a, b in zip(expected.predictions, result.predictions, strict=True):
        assert (a.name, a.score) == (b.name, pytest.approx(b.score, abs=1e-6))


def test_disk_store_keeps_models_apart(clip, siglip, tmp_path):
    store = EmbeddingStore(tmp_path / "e.sqlite3")
    Explainer(clip, store=store).text_embeddings(["a photo of a newt."])
    encoder = CountingEncoder(siglip)
    Explainer(encoder, store=store).text_embeddings(["a photo of a newt."])
    assert encoder.prompts == ["a photo of a newt."]
    assert clip.key != siglip.key


def test_store_round_trips_vectors(tmp_path):
    store = EmbeddingStore(tmp_path / "e.sqlite3")
    vectors = {f"p{i}": np.random.default_rng(i).normal(size=8).astype(np.float32) for i in range(1200)}
    store.put_many("text", "m", vectors.items())
    found = store.get_many("text", "m", [*vectors, "absent"])
    assert found.keys() == vectors.keys()
    np.testing.assert_array_equal(found["p7"], vectors["p7"])
    assert store.get_many("image", "m", ["p7"]) == {}


# --- a cache that breaks must never stop classification ----------------------------------------------------


def _damage(path):
    """Random bytes over the file's pages after the first, as `dd ... seek=3 conv=notrunc` would write."""
    rng = np.random.default_rng(0)
    data = bytearray(path.read_bytes())
    data[4096 * 3 :] = rng.integers(0, 256, size=max(len(data) - 4096 * 3, 4096 * 200), dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _filled_store(path, clip):
    store = EmbeddingStore(path)
    explainer = Explainer(clip, store=store)
    explainer.classify(random_image(1), FROGS)
    explainer.text_embeddings([f"prompt number {i}" for i in range(300)])  # enough rows for several pages
    store.close()


def test_a_damaged_cache_warns_once_and_carries_on(clip, tmp_path):
    path = tmp_path / "embeddings.sqlite3"
    _filled_store(path, clip)
    _damage(path)
    warnings = []
    store = EmbeddingStore(path, warnings.append)
    explainer = Explainer(clip, store=store)
    first = explainer.classify(random_image(1), FROGS)
    second = Explainer(clip, store=store).classify(random_image(2), FROGS)
    assert first.predictions and second.predictions
    assert len(warnings) == 1 and "is unusable" in warnings[0] and str(path) in warnings[0]
    assert not store.usable


def test_a_read_only_cache_warns_once_on_the_first_write(clip, tmp_path):
    import os

    path = tmp_path / "embeddings.sqlite3"
    _filled_store(path, clip)
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        warnings = []
        store = EmbeddingStore(path, warnings.append)
        if os.geteuid() == 0:  # root writes through file modes: make SQLite itself refuse writes
            store._db._db.execute("PRAGMA query_only = ON")
        results = [Explainer(clip, store=store).classify(random_image(seed), FROGS) for seed in (1, 7, 8)]
        assert all(r.predictions for r in results)
        assert len(warnings) == 1 and "readonly" in warnings[0].replace("-", "").replace(" ", "")
    finally:
        os.chmod(tmp_path, 0o755)
        os.chmod(path, 0o644)


def test_cli_with_a_damaged_cache_prints_one_warning_and_the_answer(
    capsys, clip, clip_dir, tmp_path, image_files, frog_file
):
    from explain.cli import main

    cache = tmp_path / "cache"
    cache.mkdir()
    _filled_store(cache / "embeddings.sqlite3", clip)
    _damage(cache / "embeddings.sqlite3")
    code = main(
        [
            "classify",
            *map(str, image_files),
            "--descriptors",
            str(frog_file),
            "--model",
            str(clip_dir),
            "--cache-dir",
            str(cache),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and out.count("margin") == len(image_files)
    assert err.count("warning:") == 1 and "is unusable" in err and "Traceback" not in err
