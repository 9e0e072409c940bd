"""How far a map can be trusted: deletion and insertion tests against random orders.

Deletion: cover the map's locations, highest first, in `steps` steps with
the image's mean colour, and re-score the descriptor after each step;
insertion: start from the image covered everywhere and uncover the
locations in the same order. Each curve is the descriptor's score minus its
score at the curve's far end (everything covered, for deletion; nothing
covered, for insertion), so that curves start and end at the same values
whatever the order, and its area is taken by the trapezoid rule over the
share of locations moved. The same is done for `seeds` random orders
(numpy's permutation with seeds 0, 1, ...). Reported as ratios of the map's
area to the random orders' mean: deletion below 1 and insertion above 1 mean
the map found where the score comes from. Costs 2 x (steps + 1) x (1 +
seeds) image forwards per map.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

STEPS = 8
SEEDS = 3


def cell_boxes(grid_shape: tuple[int, int], region: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """The pixel box of each grid location, row by row, over the region the grid covers."""
    rows, cols = grid_shape
    left, top, right, bottom = region
    xs = np.linspace(left, right, cols + 1).round().astype(int)
    ys = np.linspace(top, bottom, rows + 1).round().astype(int)
    return [(xs[j], ys[i], xs[j + 1], ys[i + 1]) for i in range(rows) for j in range(cols)]


def covered(picture: Image.Image, boxes, colour: tuple[int, ...]) -> Image.Image:
    """`picture` with each box filled with `colour`."""
    out = picture.copy()
    draw = ImageDraw.Draw(out)
    for left, top, right, bottom in boxes:
        if right > left and bottom > top:  # a grid finer than the picture has cells of no pixels
            draw.rectangle((left, top, right - 1, bottom - 1), fill=colour)
    return out


def area(curve: np.ndarray) -> float:
    """Trapezoid area of a curve sampled at equal steps over [0, 1]."""
    return float(np.sum((curve[1:] + curve[:-1]) / 2) / (len(curve) - 1))


def faithfulness(
    score: Callable[[list[Image.Image]], np.ndarray],
    picture: Image.Image,
    grid: np.ndarray,
    region: tuple[int, int, int, int],
    steps: int = STEPS,
    seeds: int = SEEDS,
) -> dict:
    """Deletion and insertion areas of the map `grid` and of random orders, their ratios, and the seconds it
    took. `score(images)` gives the descriptor's score for each image."""
    started = time.perf_counter()
    boxes = cell_boxes(grid.shape, region)
    n = len(boxes)
    colour = tuple(int(round(c)) for c in np.asarray(picture.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)))
    counts = [round(k * n / steps) for k in range(steps + 1)]
    orders = [np.argsort(-grid.reshape(-1), kind="stable")]
    orders += [np.random.default_rng(seed).permutation(n) for seed in range(seeds)]
    blank = covered(picture, boxes, colour)
    images = []
    for order in orders:
        images += [covered(picture, [boxes[i] for i in order[:k]], colour) for k in counts]  # deletion
        images += [_uncovered(blank, picture, [boxes[i] for i in order[:k]]) for k in counts]  # insertion
    scores = np.asarray(score(images), dtype=np.float64).reshape(len(orders), 2, steps + 1)
    deletion = scores[:, 0] - scores[:, 0, -1:]  # 0 once everything is covered
    insertion = scores[:, 1] - scores[:, 1, :1]  # 0 while everything is covered
    found = {
        "deletion_auc": area(deletion[0]),
        "deletion_random_auc": float(np.mean([area(c) for c in deletion[1:]])) if seeds else None,
        "insertion_auc": area(insertion[0]),
        "insertion_random_auc": float(np.mean([area(c) for c in insertion[1:]])) if seeds else None,
        "steps": steps,
        "seeds": seeds,
    }
    found["deletion_ratio"] = _ratio(found["deletion_auc"], found["deletion_random_auc"])
    found["insertion_ratio"] = _ratio(found["insertion_auc"], found["insertion_random_auc"])
    found["seconds"] = time.perf_counter() - started
    return found


def _uncovered(blank: Image.Image, picture: Image.Image, boxes) -> Image.Image:
    out = blank.copy()
    for box in boxes:
        if box[2] > box[0] and box[3] > box[1]:
            out.paste(picture.crop(box), box[:2])
    return out


def _ratio(mine: float, random: float | None) -> float | None:
    """mine / random, or None where the random orders' area is too small to divide by."""
    if random is None or abs(random) < 1e-9:
        return None
    return mine / random
