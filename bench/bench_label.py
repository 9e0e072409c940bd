"""Labelling throughput: the local engine against the bare image forward, and Ray's overhead on one machine.

On the full-size ViT-B/32 architecture with random weights and photo-sized
JPEGs, all in one run:

  (a) local engine (DataLoader decoding, batch 64, 2 workers, scoring and
      writing parts; the model loaded and the prompts cached as on any run
      after the first) / the bare image forward on already-decoded tensors
      (target >= 0.9);
  (b) Ray engine / local engine, on this machine (Ray's start-up and
      scheduling are part of it; on 2 CPU cores Ray is slower, and that is
      expected).

    python bench/bench_label.py [--images 192]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from descriptors import load_descriptors  # noqa: E402
from explain import EmbeddingStore  # noqa: E402
from explain.labelling import (
    label_collection,  # noqa: E402
    ray_engine,  # noqa: E402
)
from explain.models import load_model  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model, processor = full_size_clip()
        model.save_pretrained(folder / "model")
        processor.save_pretrained(folder / "model")
        photos = folder / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8)).save(
                photos / f"{i:04d}.jpg", quality=90
            )
        descriptors = load_descriptors(ROOT / "assets" / "descriptors" / "demo.json")
        encoder = load_model(str(folder / "model"), "cpu")
        pixels = encoder.preprocess([Image.open(p).convert("RGB") for p in sorted(photos.glob("*.jpg"))[:64]])
        encoder.encode_pixels(pixels)  # warm-up
        started = time.perf_counter()
        for _ in range(max(1, args.images // 64)):
            encoder.encode_pixels(pixels)
        bare = 64 * max(1, args.images // 64) / (time.perf_counter() - started)

        store = EmbeddingStore(folder / "cache.sqlite3")  # prompts encoded once, in a warm-up, as after a first run
        warm = folder / "warm"
        warm.mkdir()
        for path in sorted(photos.glob("*.jpg"))[:2]:
            (warm / path.name).write_bytes(path.read_bytes())
        label_collection(warm, descriptors, str(folder / "model"), folder / "out-warm", store=store, workers=0)

        def timed(engine: str) -> float:
            started = time.perf_counter()
            label_collection(
                photos,
                descriptors,
                str(folder / "model"),
                folder / f"out-{engine}",
                engine=engine,
                batch_size=64,
                workers=2,
                store=store,
            )
            return args.images / (time.perf_counter() - started)

        local = timed("local")
        ray_engine.start(cpus=os.cpu_count())
        ray = timed("ray")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        "ViT-B/32 sizes, random weights"
    )
    print(f"{args.images} JPEGs of 500x375, demo set (14 classes), batch 64, 2 workers")
    print(
        f"(a) local labelling {local:6.1f} img/s / bare image forward {bare:6.1f} img/s "
        f"= {local / bare:4.2f}  (target >= 0.9)"
    )
    print(
        f"(b) Ray labelling   {ray:6.1f} img/s / local labelling {local:6.1f} img/s "
        f"= {ray / local:4.2f}  (Ray's start-up included)"
    )


if __name__ == "__main__":
    main()
