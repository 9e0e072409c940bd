"""What a map's faithfulness test costs, and what it says, on the full-size ViT-B/32 (random weights).

One 640x480 photo-like image, the demo set's top two classes' maps: the seconds per map of the deletion and
insertion test (8 steps, 3 random orders: 72 image forwards), against one image forward in the same run.

    python bench/bench_faithfulness.py
"""

from __future__ import annotations

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
from explain import Explainer, load_model  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "assets" / "descriptors" / "demo.json"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model, processor = full_size_clip()
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        explainer = Explainer(load_model(folder, "cpu"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    descriptors = load_descriptors(DEMO)
    maps = explainer.heatmaps(image, descriptors, ["tree frog"])
    started = time.perf_counter()
    explainer.model.encode_images([image])
    forward = time.perf_counter() - started
    tested = explainer.with_faithfulness(image, maps)
    seconds = [entry.faithfulness["seconds"] for entry in tested.entries]
    ratios = [entry.faithfulness["deletion_ratio"] for entry in tested.entries]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ViT-B/32 sizes, random weights")
    print(
        f"{len(seconds)} maps: {np.mean(seconds):.2f} s a map (72 image forwards, batched), one image forward "
        f"{forward:.3f} s; per map = {np.mean(seconds) / forward:.0f} forwards' time"
    )
    print(f"deletion ratios (random weights: no reason to beat random orders): {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
