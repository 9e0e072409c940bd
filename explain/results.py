"""What a classification returns: plain, sorted records ready to print, chart or serialise.

No maths and no model here: the engine fills these in, the CLI prints them,
and charts turn them into figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from explain.errors import ExplainError


@dataclass(frozen=True)
class DescriptorScore:
    """One descriptor's score for one image, with the raw text and the sentence encoded."""

    descriptor: str
    prompt: str
    score: float

    def to_dict(self) -> dict:
        return {"descriptor": self.descriptor, "prompt": self.prompt, "score": self.score}


@dataclass(frozen=True)
class ClassScore:
    """One class's mean score and probability, with its descriptors sorted highest first.

    `fallback` is True when the class had no descriptors and was scored with
    its template prompt alone.
    """

    name: str
    score: float
    probability: float
    descriptors: tuple[DescriptorScore, ...] = ()
    fallback: bool = False

    def to_dict(self, with_descriptors: bool = True) -> dict:
        record = {"class": self.name, "score": self.score, "probability": self.probability}
        if with_descriptors:
            record["descriptors"] = [d.to_dict() for d in self.descriptors]
            record["fallback"] = self.fallback
        return record


@dataclass(frozen=True)
class Contrast:
    """Why the top class beat the runner-up, descriptor by descriptor.

    A class score is a mean, so descriptor d of a class with n descriptors adds
    score(d) / n to it; `margin` equals the top class's contributions minus
    the runner-up's.
    """

    top: ClassScore
    runner_up: ClassScore
    margin: float

    @staticmethod
    def contributions(entry: ClassScore) -> list[tuple[DescriptorScore, float]]:
        """Each descriptor of a class with its share of the class score."""
        return [(d, d.score / len(entry.descriptors)) for d in entry.descriptors]

    def to_dict(self) -> dict:
        def side(entry: ClassScore) -> dict:
            return {
                "class": entry.name,
                "score": entry.score,
                "descriptors": [dict(d.to_dict(), contribution=c) for d, c in self.contributions(entry)],
            }

        return {"top": side(self.top), "runner_up": side(self.runner_up), "margin": self.margin}


@dataclass(frozen=True)
class Classification:
    """The result for one image: descriptor-based predictions and the template baseline."""

    image: str
    model: str
    predictions: tuple[ClassScore, ...]  # sorted by score, highest first
    baseline: tuple[ClassScore, ...]  # sorted by score, highest first
    probabilities: dict = field(default_factory=lambda: {"probabilities": "softmax", "temperature": 1.0})

    @property
    def fallback_classes(self) -> list[str]:
        return [entry.name for entry in self.predictions if entry.fallback]

    def contrast(self) -> Contrast:
        """The top class against the runner-up; needs at least two classes."""
        if len(self.predictions) < 2:
            raise ValueError("a contrastive explanation needs at least two classes")
        top, runner_up = self.predictions[0], self.predictions[1]
        return Contrast(top, runner_up, top.score - runner_up.score)

    def to_dict(self, contrast: bool = False) -> dict:
        """The `--json` record; with `contrast`, also the top class against the runner-up (given two classes)."""
        record = {
            "image": self.image,
            "model": self.model,
            **self.probabilities,  # which probabilities these are: softmax or sigmoid, temperature, calibrated
            "predictions": [entry.to_dict() for entry in self.predictions],
            "baseline": [entry.to_dict(with_descriptors=False) for entry in self.baseline],
        }
        if contrast and len(self.predictions) > 1:
            record["contrast"] = self.contrast().to_dict()
        return record


@dataclass(frozen=True)
class DescriptorHeatmap:
    """Where one descriptor matches: its score at every image patch, in the same units as its bar."""

    class_name: str
    descriptor: str
    prompt: str
    grid: np.ndarray  # [grid_h, grid_w] logit_scale * cos(location, prompt) + logit_bias (`Heatmaps.units` says)
    faithfulness: dict | None = None  # deletion and insertion against random orders (explain.faithfulness)


@dataclass(frozen=True)
class Heatmaps:
    """Per-descriptor heatmaps of one image: which patches each descriptor's prompt matches.

    `input_size` is the square size the image was fed at (None: the model's
    own); `alone` is True when the prompts were the descriptors without
    their class names; `region` is the central square the processor cropped,
    which is what the grid covers.
    """

    image: str
    model: str
    input_size: int | None
    alone: bool
    entries: tuple[DescriptorHeatmap, ...]
    region: tuple[int, int, int, int] = (0, 0, 0, 0)  # (left, top, right, bottom): the part of the image the model saw
    method: str = ""  # how the maps were made, citing the method (the tower's recipe)
    family: str = ""  # the model family the recipe was chosen for
    units: str = ""  # what the grids' numbers are (most recipes: the descriptor's bar at each location)
    bar_units: bool = True  # whether they are the bar's units (False: a share of the score, as gradients give)

    @property
    def grids(self) -> np.ndarray:
        """All heatmaps stacked. # [n_descriptors, grid_h, grid_w] float32"""
        if not self.entries:
            return np.zeros((0, 0, 0), np.float32)
        return np.stack([entry.grid for entry in self.entries]).astype(np.float32)

    def find(self, class_name: str, descriptor: str) -> DescriptorHeatmap:
        """The heatmap of one descriptor of one class, as written in the class's list."""
        for entry in self.entries:
            if entry.class_name == class_name and entry.descriptor == descriptor:
                return entry
        raise ExplainError(f"{descriptor!r} is not one of the descriptors of {class_name!r}")

    def scale(self, class_name: str | None = None) -> tuple[float, float]:
        """(lowest, highest) score over every heatmap, or over one class's: one colour scale for all of them."""
        grids = [entry.grid for entry in self.entries if class_name is None or entry.class_name == class_name]
        if not grids:
            return 0.0, 1.0
        return float(min(grid.min() for grid in grids)), float(max(grid.max() for grid in grids))

    def record(self, entry: DescriptorHeatmap) -> dict:
        """One heatmap as plain numbers (the `/heatmap` answer): the grid, rows top to bottom, and what it covers."""
        return {
            "grid": entry.grid.tolist(),
            "grid_size": list(entry.grid.shape),
            "prompt": entry.prompt,
            "region": list(self.region),
            "input_size": self.input_size,
            "class": entry.class_name,
            "descriptor": entry.descriptor,
            "method": self.method,
            "family": self.family,
            "units": self.units,
            "faithfulness": entry.faithfulness,
        }
