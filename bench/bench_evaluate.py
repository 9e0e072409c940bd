"""How fast dataset evaluation feeds the model, as ratios measured in one run.

On the full-size ViT-B/32 architecture (`CLIPConfig()` defaults, random
weights, the same compute as trained ones) and a folder of photo-sized JPEGs
made here, it prints:

  (a) images/s of `embed_files` (DataLoader workers decode and preprocess
      while the model runs) / images/s of the bare image-encoder forward on
      already-preprocessed batches of the same size (target >= 0.85);
  (b) images/s of a whole `run_evaluation` (three methods, prompts encoded
      once) / images/s of transformers' zero-shot-image-classification
      pipeline called image by image with the same labels (target >= 3).

Timings are noisy on shared machines, so this is a script, not a test.

    python bench/bench_evaluate.py [--images 128] [--batch-size 32] [--workers 2]
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
from transformers import pipeline  # noqa: E402

from explain import Explainer, wrap_model  # noqa: E402
from explain.datasets import embed_files, load_dataset  # noqa: E402
from explain.evaluate import PromptRecipe, run_evaluation  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402

CLASSES = [
    "tree frog",
    "tailed frog",
    "bullfrog",
    "tabby cat",
    "lynx",
    "espresso",
    "cappuccino",
    "rocket",
    "pagoda",
    "dahlia",
]


def make_photos(root: Path, count: int) -> None:
    """Smooth colour fields with texture, 500x375, saved as JPEG: about as costly to decode as photos."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, size=(375, 500, 3))
        Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)).save(
            folder / f"{i}.jpg", quality=90
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    model, processor = full_size_clip()
    tokenizer = processor.tokenizer
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        make_photos(scratch / "data", args.images)
        dataset = load_dataset(scratch / "data")
        encoder = wrap_model(model, processor, "clip-vit-b-32-random-weights", "cpu")

        # The bare forward: batches preprocessed beforehand, only get_image_features timed.
        images = [Image.open(p).convert("RGB") for p in dataset.paths]
        batches = [encoder.preprocess(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
        with torch.inference_mode():
            model.get_image_features(**batches[0])  # warm-up
            start = time.perf_counter()
            for batch in batches:
                model.get_image_features(**batch)
            forward_rate = len(images) / (time.perf_counter() - start)

        explainer = Explainer(encoder)
        embed_files(explainer, dataset.paths[: args.batch_size], None, args.batch_size, args.workers)  # warm-up
        start = time.perf_counter()
        embed_files(Explainer(encoder), dataset.paths, None, args.batch_size, args.workers)
        loader_rate = len(images) / (time.perf_counter() - start)

        descriptors = {
            name: [f"a typical feature of a {name}", "a distinctive shape", "a usual colour"] for name in CLASSES
        }
        start = time.perf_counter()
        run_evaluation(
            dataset, descriptors, {"m": Explainer(encoder)}, PromptRecipe(), None, args.batch_size, args.workers
        )
        evaluation_rate = len(images) / (time.perf_counter() - start)

        classify = pipeline(
            "zero-shot-image-classification",
            model=model,
            tokenizer=tokenizer,
            image_processor=processor.image_processor,
            device="cpu",
        )
        sample = dataset.paths[: max(16, len(dataset.paths) // 4)]
        classify(str(sample[0]), candidate_labels=CLASSES, hypothesis_template="a photo of a {}.")  # warm-up
        start = time.perf_counter()
        for path in sample:
            classify(str(path), candidate_labels=CLASSES, hypothesis_template="a photo of a {}.")
        pipeline_rate = len(sample) / (time.perf_counter() - start)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        "ViT-B/32 sizes, random weights"
    )
    print(f"{len(images)} JPEGs of 500x375, batch size {args.batch_size}, {args.workers} workers")
    print(
        f"(a) DataLoader embedding {loader_rate:7.1f} img/s / bare image forward {forward_rate:7.1f} img/s "
        f"= {loader_rate / forward_rate:5.2f}  (target >= 0.85)"
    )
    print(
        f"(b) whole evaluation     {evaluation_rate:7.1f} img/s / pipeline, image by image {pipeline_rate:7.1f} img/s "
        f"= {evaluation_rate / pipeline_rate:5.2f}  (target >= 3)"
    )


if __name__ == "__main__":
    main()
