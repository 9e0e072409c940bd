"""Precision: what bf16 (and int8) buy on this CPU and what they cost in score error, measured in one run.

On the full-size ViT-B/32 architecture with random weights (the same compute as the real model):

  (a) image-tower throughput at batch 32, bf16 / fp32, interleaved in one process (target >= 3x), and int8;
  (b) `label` throughput at --precision auto / fp32: the local engine in this process on photo-sized JPEGs,
      decoding with 2 workers, prompts cached (target >= 2.5x);
  (c) text encoding of 2,000 DCLIP-style prompts, bf16 / fp32;
  (d) the score error against fp32: the largest descriptor and class score difference and the top-1
      agreement, for the full-size model and each family's tiny test model.

    python bench/bench_precision.py [--images 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from descriptors import build_prompts, load_descriptors  # noqa: E402
from explain import EmbeddingStore, Explainer, load_model  # noqa: E402
from explain.labelling import LabelRecipe, RunOptions, label_collection  # noqa: E402
from explain.labelling.scorer import Labeller  # noqa: E402
from explain.models.precision import cpu_units  # noqa: E402
from tests.conftest import FROGS  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    full_size_clip,
    save_tiny_align,
    save_tiny_altclip,
    save_tiny_clip,
    save_tiny_siglip,
    save_tiny_siglip2,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "descriptors" / "demo.json"
TINY = {
    "clip": save_tiny_clip,
    "siglip": save_tiny_siglip,
    "siglip2": save_tiny_siglip2,
    "align": save_tiny_align,
    "altclip": save_tiny_altclip,
}


def photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg")
    return folder


def tower_rates(model_dir: Path, rounds: int = 4) -> dict[str, float]:
    """Images a second through the image tower at batch 32, each precision's rounds interleaved."""
    models = {p: load_model(str(model_dir), "cpu", precision=p) for p in ("fp32", "bf16", "int8")}
    pixels = models["fp32"].preprocess([Image.new("RGB", (224, 224), (k * 7, 90, 200 - k)) for k in range(32)])
    for model in models.values():
        model.encode_pixels(pixels)  # warm-up
    spent = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            model.encode_pixels(pixels)
            spent[name] += time.perf_counter() - started
    return {name: 32 * rounds / seconds for name, seconds in spent.items()}


def text_rates(model_dir: Path, count: int = 2000) -> dict[str, float]:
    descriptors = load_descriptors(DEMO)
    prompts = list(build_prompts(descriptors).prompts)
    prompts = [f"{p} (variant {k})" for k in range(count // len(prompts) + 1) for p in prompts][:count]
    rates = {}
    for precision in ("fp32", "bf16"):
        model = load_model(str(model_dir), "cpu", precision=precision)
        model.encode_texts(prompts[:64])
        started = time.perf_counter()
        model.encode_texts(prompts)
        rates[precision] = count / (time.perf_counter() - started)
    return rates


def label_rates(model_dir: Path, images: Path, folder: Path) -> dict[str, float]:
    """Images a second through `label_collection`, prompts cached, for fp32 and auto."""
    rates = {}
    for precision in ("fp32", "auto"):
        recipe = LabelRecipe(str(model_dir), load_descriptors(DEMO), precision=precision)
        cache = folder / f"prompts-{precision}.sqlite3"
        store = EmbeddingStore(cache)
        Labeller.build(Explainer(load_model(str(model_dir), "cpu", precision=precision), store=store), recipe)
        store.close()
        out = folder / f"labels-{precision}"
        started = time.perf_counter()
        label_collection(images, recipe, out, RunOptions(batch_size=32, workers=2, store=EmbeddingStore(cache)))
        rates[precision] = len(list(images.glob("*.jpg"))) / (time.perf_counter() - started)
        shutil.rmtree(out)
    return rates


def score_error(
    model_dir: Path, precision: str, count: int = 32, device: str = "cpu", descriptors=None
) -> tuple[float, float, float]:
    """Largest |descriptor score| and |class score| difference from fp32, and the top-1 agreement."""
    descriptors = descriptors or load_descriptors(DEMO)
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)) for _ in range(count)]
    reference = Explainer(load_model(str(model_dir), device, precision="fp32")).classify_many(images, descriptors)
    other = Explainer(load_model(str(model_dir), device, precision=precision)).classify_many(images, descriptors)
    worst_descriptor = worst_class = 0.0
    agree = 0
    for a, b in zip(reference, other, strict=True):
        mine = {e.name: e for e in b.predictions}
        agree += a.predictions[0].name == b.predictions[0].name
        for entry in a.predictions:
            worst_class = max(worst_class, abs(entry.score - mine[entry.name].score))
            theirs = {d.descriptor: d.score for d in mine[entry.name].descriptors}
            for d in entry.descriptors:
                worst_descriptor = max(worst_descriptor, abs(d.score - theirs[d.descriptor]))
    return worst_descriptor, worst_class, agree / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"CPU units: {cpu_units().describe()}; oneDNN capability {torch.backends.cpu.get_cpu_capability()}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, processor = full_size_clip()
        model.save_pretrained(folder / "model")
        processor.save_pretrained(folder / "model")
        tower = tower_rates(folder / "model")
        print(
            f"(a) image tower, ViT-B/32, batch 32: fp32 {tower['fp32']:5.1f} img/s, bf16 {tower['bf16']:5.1f} "
            f"img/s: bf16/fp32 = {tower['bf16'] / tower['fp32']:4.2f}  (target >= 3); "
            f"int8 {tower['int8']:5.1f} img/s = {tower['int8'] / tower['fp32']:4.2f}x"
        )
        labels = label_rates(folder / "model", photos(folder / "photos", args.images), folder)
        print(
            f"(b) label, {args.images} JPEGs of 500x375, 2 decoding workers: fp32 {labels['fp32']:5.1f} img/s, "
            f"auto {labels['auto']:5.1f} img/s: auto/fp32 = {labels['auto'] / labels['fp32']:4.2f}  (target >= 2.5)"
        )
        text = text_rates(folder / "model")
        print(
            f"(c) text encoding, 2,000 prompts: fp32 {text['fp32']:6.1f}/s, bf16 {text['bf16']:6.1f}/s: "
            f"bf16/fp32 = {text['bf16'] / text['fp32']:4.2f}"
        )
        print(
            "(d) score error against fp32 (32 images, demo set): largest descriptor / class difference, top-1 agreement"
        )
        for precision in ("bf16", "int8"):
            d, c, agree = score_error(folder / "model", precision)
            print(f"    ViT-B/32 full size {precision}: {d:.4f} / {c:.4f}, {agree:.1%}")
        for family, save in TINY.items():
            tiny = save(folder / f"tiny-{family}")
            d, c, agree = score_error(tiny, "bf16", descriptors=FROGS)  # the tiny tokenizers' vocabulary
            print(f"    tiny {family:8s} bf16: {d:.4f} / {c:.4f}, {agree:.1%}")


if __name__ == "__main__":
    main()
