"""Labelling throughput: the local engine against the bare image forward, and Ray against local, start-up included.

On the full-size ViT-B/32 architecture with random weights and photo-sized
JPEGs, all in one run:

  (a) local engine, in this process (DataLoader decoding, batch 64, 2
      workers, scoring and writing parts; the model loaded and the prompts
      cached as on any run after the first) / the bare image forward on
      already-decoded tensors (target >= 0.9);
  (b) `python -m explain label --engine ray` / the same command with
      `--engine local`, each a fresh process timed from start to exit, so
      that everything a user waits for counts: imports, Ray's start, its
      workers' start, the model loading (target >= 0.9);
  (c) the start-up of each engine on its own: the same commands on 2 images.

    python bench/bench_label.py [--images 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from descriptors import load_descriptors  # noqa: E402
from explain import EmbeddingStore, Explainer  # noqa: E402
from explain.labelling import LabelRecipe, RunOptions, label_collection  # noqa: E402
from explain.labelling.scorer import Labeller  # noqa: E402
from explain.models import load_model  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "descriptors" / "demo.json"


def photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
    return folder


def bare_forward(model_dir: Path, images: Path, count: int) -> float:
    encoder = load_model(str(model_dir), "cpu")
    pixels = encoder.preprocess([Image.open(p).convert("RGB") for p in sorted(images.glob("*.jpg"))[:64]])
    encoder.encode_pixels(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(max(1, count // 64)):
        encoder.encode_pixels(pixels)
    return 64 * max(1, count // 64) / (time.perf_counter() - started)


def command_seconds(engine: str, images: Path, model_dir: Path, prompts: Path, out: Path, workers: int = 2) -> float:
    """Wall time of one `explain label` process, with the prompts cached and the images not."""
    cache = out.with_name(out.name + "-cache")
    cache.mkdir()
    shutil.copy(prompts, cache / "embeddings.sqlite3")
    command = [sys.executable, "-m", "explain", "label", str(images), "--descriptors", str(DEMO), "--model",
               str(model_dir), "--out", str(out), "--engine", engine, "--workers", str(workers), "--batch-size", "64",
               "--cache-dir", str(cache)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, processor = full_size_clip()
        model.save_pretrained(folder / "model")
        processor.save_pretrained(folder / "model")
        images = photos(folder / "photos", args.images)
        two = folder / "two"
        two.mkdir()
        for path in sorted(images.glob("*.jpg"))[:2]:
            shutil.copy(path, two / path.name)
        bare = bare_forward(folder / "model", images, args.images)

        # The prompts encoded once, as after a first run; no image embedding is cached anywhere below.
        prompts_only = folder / "prompts-only.sqlite3"
        recipe = LabelRecipe(str(folder / "model"), load_descriptors(DEMO))
        store = EmbeddingStore(prompts_only)
        Labeller.build(Explainer(load_model(str(folder / "model"), "cpu"), store=store), recipe)
        store.close()

        in_process_store = folder / "in-process.sqlite3"
        shutil.copy(prompts_only, in_process_store)
        started = time.perf_counter()
        label_collection(
            images,
            recipe,
            folder / "out-local",
            RunOptions(batch_size=64, workers=2, store=EmbeddingStore(in_process_store)),
        )
        in_process = args.images / (time.perf_counter() - started)

        timed = {}
        timed["ray-1"] = command_seconds("ray", images, folder / "model", prompts_only, folder / "cli-ray-1", 1)
        timed["ray-1-start"] = command_seconds("ray", two, folder / "model", prompts_only, folder / "start-ray-1", 1)
        for engine in ("local", "ray"):
            timed[engine] = command_seconds(engine, images, folder / "model", prompts_only, folder / f"cli-{engine}")
            timed[engine + "-start"] = command_seconds(
                engine, two, folder / "model", prompts_only, folder / f"start-{engine}"
            )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        "ViT-B/32 sizes, random weights"
    )
    print(f"{args.images} JPEGs of 500x375, demo set (14 classes), batch 64, 2 workers, prompts cached")
    print(
        f"(a) local labelling {in_process:6.1f} img/s / bare image forward {bare:6.1f} img/s "
        f"= {in_process / bare:4.2f}  (target >= 0.9)"
    )
    print(
        f"(b) `label --engine ray` {timed['ray']:5.1f} s / `--engine local` {timed['local']:5.1f} s for "
        f"{args.images} images: Ray/local throughput = {timed['local'] / timed['ray']:4.2f}  (target >= 0.9)"
    )
    print(
        f"    one Ray actor with both CPUs: {timed['ray-1']:5.1f} s, Ray/local = "
        f"{timed['local'] / timed['ray-1']:4.2f}; its start-up {timed['ray-1-start']:5.1f} s"
    )
    print(
        f"(c) start-up (the same commands on 2 images): local {timed['local-start']:5.1f} s, "
        f"Ray {timed['ray-start']:5.1f} s"
    )


if __name__ == "__main__":
    main()
