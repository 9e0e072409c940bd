"""The deletion and insertion tests of a map, checked on a toy model whose score depends on one location."""

import numpy as np
import pytest
from PIL import Image

from explain import Explainer
from explain.faithfulness import area, cell_boxes, faithfulness
from explain.scoring import normalise
from tests.hand_made import HandMadeEncoder


def red_of_top_left(images):
    """A score that reads the top-left quadrant only: its mean red, from 0 to 1."""
    return np.array([np.asarray(image)[:20, :20, 0].mean() / 255.0 for image in images])


def test_deletion_and_insertion_equal_a_direct_computation():
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[:20, :20, 0] = 255  # the only red: the top-left location of a 2x2 grid
    picture = Image.fromarray(pixels)
    grid = np.array([[5.0, 1.0], [0.0, -1.0]])  # a map that ranks the top-left location first
    found = faithfulness(red_of_top_left, picture, grid, (0, 0, 40, 40), steps=4, seeds=3)
    mean_red = round(pixels[..., 0].mean()) / 255.0  # the covering colour (the mean, rounded to a byte)
    drop = 1.0 - mean_red
    # Deletion with the map's order: the score falls at the first step and stays there.
    assert found["deletion_auc"] == pytest.approx(area(np.array([drop, 0, 0, 0, 0])))
    # Random orders: the location's place in each permutation decides when the score falls.
    expected = []
    for seed in range(3):
        place = int(np.nonzero(np.random.default_rng(seed).permutation(4) == 0)[0][0]) + 1
        curve = np.array([drop if k < place else 0.0 for k in range(5)])
        expected.append(area(curve))
    assert found["deletion_random_auc"] == pytest.approx(np.mean(expected))
    assert found["deletion_ratio"] == pytest.approx(found["deletion_auc"] / np.mean(expected))
    assert found["insertion_auc"] == pytest.approx(area(np.array([0, drop, drop, drop, drop])))
    assert found["insertion_ratio"] >= 1.0 and found["deletion_ratio"] <= 1.0
    assert found["seconds"] > 0


def test_cells_cover_the_region_without_gaps():
    boxes = cell_boxes((3, 4), (10, 0, 70, 45))
    assert len(boxes) == 12 and boxes[0][:2] == (10, 0) and boxes[-1][2:] == (70, 45)
    assert sum((r - left) * (b - t) for left, t, r, b in boxes) == 60 * 45


class PatchedEncoder(HandMadeEncoder):
    """A hand-made encoder whose image embedding follows the top-left quadrant's redness."""

    def encode_images(self, images):
        red = red_of_top_left(images)
        return normalise(np.stack([red, 1.0 - red], axis=1).astype(np.float32))


def test_the_explainer_attaches_a_test_to_every_map():
    from explain.results import DescriptorHeatmap, Heatmaps

    directions = {p: [1.0, 0.0] for p in ["tree frog, which has protruding eyes"]}
    explainer = Explainer(PatchedEncoder(directions))
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[:20, :20, 0] = 255
    grid = np.array([[5.0, 1.0], [0.0, -1.0]], np.float32)
    entry = DescriptorHeatmap("tree frog", "protruding eyes", "tree frog, which has protruding eyes", grid)
    maps = Heatmaps("toy", "hand-made", None, False, (entry,), (0, 0, 40, 40), "toy", "toy")
    tested = explainer.with_faithfulness(Image.fromarray(pixels), maps, steps=4, seeds=2)
    result = tested.entries[0].faithfulness
    assert result["deletion_ratio"] < 1.0 and tested.record(tested.entries[0])["faithfulness"] == result


def test_a_grid_finer_than_the_picture_is_tested_without_error():
    picture = Image.new("RGB", (6, 5), (200, 10, 10))
    grid = np.arange(14 * 18, dtype=np.float64).reshape(14, 18)
    found = faithfulness(lambda images: np.zeros(len(images)), picture, grid, (0, 0, 6, 5), steps=4, seeds=1)
    assert found["deletion_ratio"] is None  # a flat score: no random area to divide by, said as None
