"""What one image's map costs with each recipe, on full-size towers with random weights, against one image pass.

Each tower is built at its real size from open_clip's or transformers' own config (random weights cost the
same compute), wrapped as the app wraps it, and timed on a 640x480 image: `patch_embeddings` (the part a
map costs; the text is shared with the bars) against `encode_images` of the same image, both the best of
two runs, in one process. The gradient fallback is also forced on CLIP ViT-B/32, whose own recipe is
ClearCLIP, to compare the two on one tower.

    python bench/bench_maps.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

OPEN_CLIP_TOWERS = {  # bench name: open_clip architecture (random weights)
    "EVA02-B-16 (timm Eva, ClearCLIP)": "EVA02-B-16",
    "ViT-B-16-SigLIP (timm MAP head, value path)": "ViT-B-16-SigLIP",
    "coca_ViT-B-32 (attentional pooler, value path)": "coca_ViT-B-32",
    "RN50 (attention pool, value path)": "RN50",
    "convnext_base (timm ConvNeXt, gradient fallback)": "convnext_base",
}


class ZeroTokens:
    """A stand-in tokenizer: the text tower is not what is timed, and some towers' tokenizers are downloads."""

    def __init__(self, context_length: int):
        self.context_length = context_length

    def __call__(self, texts):
        return torch.zeros(len(texts), self.context_length, dtype=torch.long)


def open_clip_model(arch: str):
    import open_clip

    from explain.models.open_clip_backend import OpenClipModel

    model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=None)
    context = model.context_length if hasattr(model, "context_length") else 77
    return OpenClipModel(arch, model, transform, ZeroTokens(context), torch.device("cpu"), arch)


def clip_model(gradient: bool = False):
    from explain.models.transformers_backend import wrap_model
    from tests.tiny_models import full_size_clip

    model, processor = full_size_clip()
    wrapped = wrap_model(model, processor, "ViT-B/32")
    if gradient:
        type(wrapped).map_recipe = property(lambda self: "gradient")
    return wrapped


def best_of_two(call) -> float:
    times = []
    for _ in range(2):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="bench names containing any of these words")
    args = parser.parse_args()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    towers = {"CLIP ViT-B/32 (transformers, ClearCLIP)": lambda: clip_model()}
    towers.update({name: (lambda arch=arch: open_clip_model(arch)) for name, arch in OPEN_CLIP_TOWERS.items()})
    towers["CLIP ViT-B/32 (transformers, gradient fallback forced)"] = lambda: clip_model(gradient=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, full-size towers, random weights, 640x480")
    for name, build in towers.items():
        if args.only and not any(word in name for word in args.only):
            continue
        print(measure(name, build(), image), flush=True)


def measure(name: str, model, image: Image.Image) -> str:
    """One tower's line: its grid, a map's seconds, one image pass's, and their ratio."""
    forward = best_of_two(lambda: model.encode_images([image]))
    grid = model.patch_embeddings(image)
    mapping = best_of_two(lambda: model.patch_embeddings(image))
    return (
        f"{name}: grid {grid.shape[0]}x{grid.shape[1]}, map {mapping:.2f} s, one image pass {forward:.2f} s, "
        f"ratio {mapping / forward:.1f}"
    )


if __name__ == "__main__":
    main()
