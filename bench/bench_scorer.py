"""How cheap live editing is, as ratios to the model's own forward passes.

Runs on the full-size ViT-B/32 architecture (`CLIPConfig()` defaults) with
random weights, which cost the same compute as trained ones, and prints:

  (a) re-scoring after one descriptor of a 10-class x 6-descriptor set is
      edited, image already cached / one text-encoder forward of one prompt
      (target <= 2);
  (b) scoring a new image with every prompt already cached / one
      image-encoder forward (target <= 1.3).

Both sides of each ratio are measured in the same run, so the ratios hold
across machines even though the milliseconds do not. This is a script, not a
test: timings on shared machines are too noisy to assert on.

    python bench/bench_scorer.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from explain import Explainer, wrap_model  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402

FEATURES = [
    "protruding eyes",
    "a bright green colour",
    "sticky toe pads",
    "a slender body",
    "long hind legs",
    "a smooth, moist skin",
]


def paired_medians(action, reference, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median milliseconds of `action` and `reference`, run alternately so drift hits both alike."""
    for _ in range(warmup):
        action()
        reference()
    action_times, reference_times = [], []
    for _ in range(repeats):
        for run, times in ((action, action_times), (reference, reference_times)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    return statistics.median(action_times) * 1000, statistics.median(reference_times) * 1000


def photo(seed: int) -> Image.Image:
    """A 640x480 photo-sized image of noise: decoding and resizing cost as much as a real one."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    model, processor = full_size_clip()
    encoder = wrap_model(model, processor, "clip-vit-b-32-random-weights", "cpu")
    explainer = Explainer(encoder)
    descriptors = {f"class {k}": [f"{feature} variant {k}" for feature in FEATURES] for k in range(10)}
    image = photo(0)
    explainer.classify(image, descriptors)  # fills both caches

    counter = iter(range(10**9))

    def rescore_after_edit():
        edited = dict(descriptors)
        edited["class 3"] = [f"edited feature number {next(counter)}", *descriptors["class 3"][1:]]
        explainer.classify(image, edited)

    one_prompt = encoder.text_inputs(["class 3, which has edited feature number 20"])  # as long as the edits

    def text_forward():
        with torch.inference_mode():
            model.get_text_features(**one_prompt)

    images = [photo(seed) for seed in range(1, args.repeats + 10)]
    new_images = iter(images)

    def score_new_image():
        explainer.classify(next(new_images), descriptors)

    pixels = encoder.preprocess([images[0]])

    def image_forward():
        with torch.inference_mode():
            model.get_image_features(**pixels)

    before = explainer.texts_encoded
    edit_ms, text_ms = paired_medians(rescore_after_edit, text_forward, args.repeats)
    new_image_ms, image_ms = paired_medians(score_new_image, image_forward, args.repeats)
    edits = args.repeats + 3
    assert explainer.texts_encoded - before == edits, "an edit re-encoded more than the edited prompt"

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, ViT-B/32 sizes, random weights, "
        f"median of {args.repeats}"
    )
    print(
        f"(a) re-score after one edit  {edit_ms:8.2f} ms / one text forward   {text_ms:8.2f} ms "
        f"= {edit_ms / text_ms:5.2f}  (target <= 2)"
    )
    print(
        f"(b) score a new image        {new_image_ms:8.2f} ms / one image forward  {image_ms:8.2f} ms "
        f"= {new_image_ms / image_ms:5.2f}  (target <= 1.3)"
    )


if __name__ == "__main__":
    main()
