"""Drawing a descriptor's heatmap over its image, in the descriptor's own score units, and writing heatmaps to disk.

`draw_heatmap` takes a score grid from `Explainer.heatmaps` and the image;
it returns a PIL image with the grid interpolated bilinearly to the image's
size, coloured from dark blue (low) through teal and green to yellow
(high), and blended over the part of the photo the model saw (CLIP crops
the centre square; the rest is greyed), with a strip below that shows the
scale. `write_heatmaps` saves one image's heatmaps as raw grids and PNGs.
No scoring here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from explain.results import Heatmaps

# Anchors of a perceptually ordered blue-to-yellow ramp (after viridis), interpolated linearly.
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to RGB. # [..., 3] uint8"""
    position = np.clip(values, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(RAMP) - 2)
    fraction = (position - low)[..., None]
    return (RAMP[low] * (1 - fraction) + RAMP[low + 1] * fraction).astype(np.uint8)


def upsampled(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [grid_h, grid_w] heatmap interpolated bilinearly to (width, height). # [height, width]"""
    return np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def scale_ends(low: float, high: float) -> tuple[str, str]:
    """A scale's two ends in words that tell them apart: two decimals for scores (logits span whole units),
    three significant figures for a narrow span (gradient shares can be 1e-9 logits), never "0.00 to 0.00"."""
    if high - low >= 0.05:
        return f"{low:.2f}", f"{high:.2f}"
    return f"{low:.3g}", f"{high:.3g}"


def draw_heatmap(
    image: Image.Image,
    grid: np.ndarray,
    low: float,
    high: float,
    region: tuple[int, int, int, int] | None = None,
    alpha: float = 0.55,
    label: str = "",
) -> Image.Image:
    """The image with the heatmap over `region` (the part the model saw; outside it the photo is greyed)
    and a scale strip below: `low` and `high` in score units."""
    image = image.convert("RGB")
    left, top, right, bottom = region if region and region[2] > region[0] else (0, 0, image.width, image.height)
    blended = Image.blend(image, Image.new("RGB", image.size, (128, 128, 128)), 0.6)  # unseen parts: greyed
    seen = image.crop((left, top, right, bottom))
    values = (upsampled(grid, seen.size) - low) / ((high - low) or 1.0)
    blended.paste(Image.blend(seen, Image.fromarray(colour(values)), alpha), (left, top))
    strip_height = 28
    canvas = Image.new("RGB", (image.width, image.height + strip_height), "white")
    canvas.paste(blended, (0, 0))
    ramp = colour(np.linspace(0, 1, max(image.width - 120, 10))[None, :].repeat(10, axis=0))
    canvas.paste(Image.fromarray(ramp), (60, image.height + 9))
    draw = ImageDraw.Draw(canvas)
    ends = scale_ends(low, high)
    draw.text((4, image.height + 8), ends[0], fill="black")
    draw.text((image.width - 56, image.height + 8), ends[1], fill="black")
    if label:
        draw.rectangle((0, 0, min(image.width, 8 + 6 * len(label)), 16), fill="white")
        draw.text((4, 2), label, fill="black")
    return canvas


def write_heatmaps(heatmaps: Heatmaps, image: Image.Image, folder: Path) -> list[Path]:
    """One .npz of the raw grids per image (`grids` [n, grid_h, grid_w] float32, with `prompts`, `descriptors`
    and `classes` in the same order, `input_size`, `model`, `region`, `method`, `family`, `units`, and the
    faithfulness ratios where they were run) and one PNG per descriptor, all on one colour scale per image."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(heatmaps.image).stem or "image"
    entries = heatmaps.entries
    written = [folder / f"{stem}.npz"]
    np.savez_compressed(
        written[0],
        grids=heatmaps.grids,
        prompts=np.array([entry.prompt for entry in entries]),
        descriptors=np.array([entry.descriptor for entry in entries]),
        classes=np.array([entry.class_name for entry in entries]),
        input_size=np.array(heatmaps.input_size or 0),
        model=np.array(heatmaps.model),
        region=np.array(heatmaps.region),
        method=np.array(heatmaps.method),
        family=np.array(heatmaps.family),
        units=np.array(heatmaps.units),
        **_faithfulness_arrays(heatmaps),
    )
    low, high = heatmaps.scale()
    for k, entry in enumerate(entries):
        path = folder / f"{stem}-{_slug(entry.class_name)}-{k:02d}-{_slug(entry.descriptor)[:40]}.png"
        draw_heatmap(image, entry.grid, low, high, heatmaps.region).save(path)
        written.append(path)
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def _faithfulness_arrays(heatmaps: Heatmaps) -> dict[str, np.ndarray]:
    """Each map's deletion and insertion numbers, in map order (NaN where not computed)."""
    keys = ("deletion_ratio", "insertion_ratio", "deletion_auc", "insertion_auc")
    if not any(entry.faithfulness for entry in heatmaps.entries):
        return {}
    return {
        key: np.array([_number((e.faithfulness or {}).get(key)) for e in heatmaps.entries], np.float64) for key in keys
    }


def _number(value) -> float:
    return np.nan if value is None else float(value)
