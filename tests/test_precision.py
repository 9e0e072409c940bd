"""Precision: auto decided from the CPU's own flags, every command recording what ran, caches that never mix
fp32 and bf16, and the score error of bf16 and int8 measured against fp32."""

import json

import numpy as np
import pytest
import torch

from explain import EmbeddingStore, Explainer, load_model
from explain.cli import main
from explain.errors import ExplainError
from explain.models import precision as precision_module
from explain.models.precision import CpuUnits, resolve_precision
from tests.conftest import FROGS, random_image

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def units(monkeypatch):
    """Pretend the CPU has the given flags."""

    def pretend(*flags):
        monkeypatch.setattr(precision_module, "cpu_units", lambda: CpuUnits(frozenset(flags)))

    return pretend


def test_auto_reads_the_cpus_flags_never_the_models_name(units):
    units("avx2", "amx_bf16", "amx_int8", "avx512_bf16")
    assert resolve_precision("auto", CPU) == ("bf16", "auto: bf16, this CPU has amx_bf16 and avx512_bf16")
    units("avx2", "avx512_vnni")
    assert resolve_precision("auto", CPU) == ("fp32", "auto: fp32, this CPU has no bf16 matrix units")
    assert resolve_precision("auto", CUDA)[0] == "fp16"
    assert resolve_precision("auto", MPS)[0] == "fp32"
    assert resolve_precision("bf16", CPU)[1].endswith("may be slower than fp32")


def test_a_precision_the_device_cannot_run_is_refused_in_one_line():
    with pytest.raises(ExplainError, match="fp16 needs a CUDA GPU; on this CPU use bf16 or fp32"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ExplainError, match="int8 runs on the CPU only"):
        resolve_precision("int8", CUDA)
    with pytest.raises(ExplainError, match="precision must be one of"):
        resolve_precision("fp8", CPU)


def test_the_flags_this_machine_reports_are_read():
    flags = precision_module.cpu_units().flags
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        line = next(line for line in handle if line.startswith("flags"))
    assert flags == frozenset(line.partition(":")[2].split())


def test_fp32_and_bf16_embeddings_never_mix_in_a_cache(tmp_path, clip_dir):
    store = EmbeddingStore(tmp_path / "e.sqlite3")
    fp32 = Explainer(load_model(str(clip_dir), "cpu", precision="fp32"), store=store)
    bf16 = Explainer(load_model(str(clip_dir), "cpu", precision="bf16"), store=store)
    assert fp32.model.key != bf16.model.key and fp32.model.key.endswith("|float32")
    image = random_image(3)
    a = fp32.classify(image, FROGS)
    b = bf16.classify(image, FROGS)
    assert bf16.texts_encoded > 0 and bf16.images_encoded == 1  # nothing served from fp32's entries
    # The same store read back by a fresh bf16 explainer gives bf16's own numbers, not fp32's.
    again = Explainer(load_model(str(clip_dir), "cpu", precision="bf16"), store=store).classify(image, FROGS)
    assert again.predictions[0].score == pytest.approx(b.predictions[0].score, abs=1e-6)
    assert a.to_dict()["precision"] == "fp32" and b.to_dict()["precision"] == "bf16"


@pytest.mark.parametrize("precision, bound", [("bf16", 1.0), ("int8", 6.0)])
def test_low_precision_error_against_fp32_on_every_family(family, precision, bound):
    """The measured bound on the tiny models (bench/bench_precision.py measures the full-size one): every
    descriptor score within `bound` of fp32's, the final normalisation and cosine in float32."""
    images = [random_image(seed, size=(64, 64)) for seed in range(8)]
    reference = Explainer(load_model(str(family), "cpu", precision="fp32")).classify_many(images, FROGS)
    model = load_model(str(family), "cpu", precision=precision)
    assert model.encode_texts(["a frog"]).dtype == np.float32
    other = Explainer(model).classify_many(images, FROGS)
    worst = 0.0
    for a, b in zip(reference, other, strict=True):
        theirs = {(e.name, d.descriptor): d.score for e in b.predictions for d in e.descriptors}
        worst = max(
            worst, *(abs(d.score - theirs[(e.name, d.descriptor)]) for e in a.predictions for d in e.descriptors)
        )
    assert 0 < worst < bound


def test_every_command_records_the_precision_that_ran(capsys, tmp_path, clip_dir, image_files, frog_file):
    code = main(["classify", str(image_files[0]), "--descriptors", str(frog_file), "--model", str(clip_dir), "--json",
                 "--precision", "bf16", "--no-cache"])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert code == 0 and record["precision"] == "bf16"
    out = tmp_path / "labels"
    code = main(["label", str(tmp_path), "--descriptors", str(frog_file), "--model", str(clip_dir), "--out", str(out),
                 "--precision", "int8", "--workers", "0", "--no-cache"])  # fmt: skip
    import pyarrow.parquet as pq

    provenance = json.loads(pq.read_schema(out / "labels.parquet").metadata[b"descry"])
    assert provenance["precision"] == "int8" and provenance["precision_used"]["precision"] == "int8"
    # A re-run at another precision would mix numbers made two ways in one file: refused.
    code = main(["label", str(tmp_path), "--descriptors", str(frog_file), "--model", str(clip_dir), "--out", str(out),
                 "--precision", "fp32", "--workers", "0", "--no-cache"])  # fmt: skip
    assert code == 2 and "another precision" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["quickgelu", "resnet", "coca", "siglip", "eva", "timm"])
def test_int8_runs_every_open_clip_tower_and_its_map_or_says_why_not(tmp_path, variant):
    """open_clip reads its text tower's weight dtype and its ResNet pool's weights itself, and the pools' value
    paths read their weights: int8 keeps those layers in float, so every tower classifies close to fp32 and
    gives its map, except where the recipe needs weights int8 packs (ClearCLIP on a timm block, gradients)."""
    from tests.tiny_models import save_tiny_open_clip

    folder = str(save_tiny_open_clip(tmp_path / variant, variant))
    image = random_image(4, size=(64, 64))
    reference = Explainer(load_model(folder, "cpu", precision="fp32")).classify(image, FROGS)
    packed = Explainer(load_model(folder, "cpu", precision="int8"))
    found = packed.classify(image, FROGS)
    assert found.predictions[0].score == pytest.approx(reference.predictions[0].score, abs=1.0)
    if variant in ("eva", "timm"):
        with pytest.raises(ExplainError, match="int8"):
            packed.heatmaps(image, FROGS, ["tree frog"])
    else:
        assert np.isfinite(packed.heatmaps(image, FROGS, ["tree frog"]).grids).all()
