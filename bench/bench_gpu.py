"""The GPU path, measured on CUDA: fp16 image throughput, evaluation and labelling from JPEGs, fp16's error.

On the full-size ViT-B/32 architecture with random weights:

  (a) image-tower throughput at batch 256, fp16 and fp32;
  (b) `evaluate` from JPEG files to metrics, images a second (decoding with --workers processes);
  (c) `label` from JPEG files to labels.parquet, images a second;
  (d) the largest descriptor and class score difference between fp16 and fp32, and the top-1 agreement.

Without a CUDA device it says so in one line and exits with status 2: its figures are quoted in the README
only from a run on a real GPU, with the device named.

    python bench/bench_gpu.py [--images 2048] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_precision import DEMO, score_error  # noqa: E402
from PIL import Image  # noqa: E402

from descriptors import load_descriptors  # noqa: E402
from explain import Explainer, load_model  # noqa: E402
from explain.datasets import load_dataset  # noqa: E402
from explain.evaluate import run_evaluation  # noqa: E402
from explain.labelling import LabelRecipe, RunOptions, label_collection  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402


def photo_tree(folder: Path, count: int, classes: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / classes[i % len(classes)]
        target.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(target / f"{i:05d}.jpg", quality=90)
    return folder


def tower_rate(model_dir: Path, precision: str, batch: int = 256, rounds: int = 5) -> float:
    model = load_model(str(model_dir), "cuda", precision=precision)
    pixels = model.preprocess([Image.new("RGB", (224, 224), (k % 255, 90, 40)) for k in range(batch)])
    model.encode_pixels(pixels)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(rounds):
        model.encode_pixels(pixels)
    torch.cuda.synchronize()
    return batch * rounds / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPUs")
    descriptors = load_descriptors(DEMO)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, processor = full_size_clip()
        model.save_pretrained(folder / "model")
        processor.save_pretrained(folder / "model")
        fp16, fp32 = tower_rate(folder / "model", "fp16"), tower_rate(folder / "model", "fp32")
        print(f"(a) image tower, batch 256: fp16 {fp16:7.1f} img/s, fp32 {fp32:7.1f} img/s, ratio {fp16 / fp32:4.2f}")
        tree = photo_tree(folder / "photos", args.images, list(descriptors))
        explainer = Explainer(load_model(str(folder / "model"), "cuda"))
        started = time.perf_counter()
        run_evaluation(load_dataset(str(tree)), descriptors, {"vit-b-32": explainer}, batch_size=256,
                       workers=args.workers)  # fmt: skip
        print(f"(b) evaluate, JPEG to metrics: {args.images / (time.perf_counter() - started):7.1f} img/s")
        started = time.perf_counter()
        label_collection(tree, LabelRecipe(str(folder / "model"), descriptors), folder / "labels",
                         RunOptions(batch_size=256, workers=args.workers, device="cuda"))  # fmt: skip
        print(f"(c) label, JPEG to labels.parquet: {args.images / (time.perf_counter() - started):7.1f} img/s")
        d, c, agree = score_error(folder / "model", "fp16", device="cuda")
        print(f"(d) fp16 against fp32: descriptor {d:.4f}, class {c:.4f}, top-1 agreement {agree:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
