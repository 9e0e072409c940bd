"""What a labelling run is made of, and the provenance written beside its labels.

`LabelRecipe` holds everything that decides a label: the model, the
descriptor set (and the file it came from), the class names the labels are
written with, the template and prompt style, how many classes the top K
keeps, and for how many classes the descriptor scores are kept.
`provenance` turns a recipe into the record that goes into labels.parquet's
metadata and into `provenance.json` beside every other format: the recipe,
the descriptor file's SHA-256, the backend, the versions of Descry, torch
and the model library, and the command line. A re-run into the same folder
must have the same recipe (`check_resumable`), so one file never mixes
labels made two ways. No scoring and no file formats here.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from descriptors import DEFAULT_TEMPLATE, PromptStyle
from descriptors.names import ClassMatch, match_classes
from explain.errors import ExplainError

# What two runs must share for their rows to sit in one file; the rest of the provenance may differ.
IDENTITY = (
    "model", "descriptors_sha256", "classes", "template", "prompt_style", "top", "descriptor_scores_for",
    "probabilities", "calibration_sha256", "min_probability", "min_margin", "multi_label", "threshold", "precision",
)  # fmt: skip


@dataclass(frozen=True)
class LabelRecipe:
    """Everything that decides a label. `classes` are the names labels are written with (a dataset's
    folder names, say), matched to the descriptor keys by name; None labels with the keys themselves.
    `explain` is for how many of the best classes each row keeps its descriptor scores (None: every class)."""

    model: str
    descriptors: Mapping[str, Sequence[str]] = field(repr=False)
    classes: tuple[str, ...] | None = None
    template: str = DEFAULT_TEMPLATE
    style: PromptStyle = PromptStyle()
    top: int = 5
    explain: int | None = 2
    descriptor_file: str | None = None
    probabilities: str = "auto"  # softmax, sigmoid, or auto: the model's own (sigmoid for SigLIP)
    calibration: str | None = None  # a calibration.json from `explain calibrate`
    min_probability: float = 0.0  # below it, no label: abstained, with the reason
    min_margin: float = 0.0  # the label's score over the runner-up's, in score units
    multi_label: bool = False  # every class whose probability passes its threshold
    threshold: float = 0.5  # the multi-label threshold where the calibration fitted none
    review_margin: float = 1.0  # rows below it are tagged low-margin for review (FiftyOne)
    precision: str = "auto"  # the towers' number format (explain.models.precision)

    def __post_init__(self):
        if self.top < 1:
            raise ValueError(f"top must be at least 1, not {self.top}")
        if self.explain is not None and self.explain < 1:
            raise ValueError(f"explain must be at least 1 class (or None for all), not {self.explain}")

    def match(self) -> ClassMatch:
        """The descriptors and prompt name of every class the labels are written with, in order."""
        names = list(self.classes) if self.classes is not None else list(self.descriptors)
        return match_classes(names, {k: list(v) for k, v in self.descriptors.items()})


def descriptors_digest(recipe: LabelRecipe) -> str:
    """SHA-256 of the descriptor file's bytes, or of the set as canonical JSON when it came from no file."""
    if recipe.descriptor_file and Path(recipe.descriptor_file).is_file():
        return hashlib.sha256(Path(recipe.descriptor_file).read_bytes()).hexdigest()
    canonical = json.dumps({k: list(v) for k, v in recipe.descriptors.items()}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def provenance(
    recipe: LabelRecipe, backend: str, classes: Sequence[str], keeps_logits: bool, command: Sequence[str] | None = None
) -> dict:
    """How the labels were made, as plain JSON: the recipe, the versions and the command line (by default
    this process's own)."""
    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return {
        "model": recipe.model,
        "backend": backend,
        "descriptor_file": str(Path(recipe.descriptor_file).resolve()) if recipe.descriptor_file else None,
        "descriptors_sha256": descriptors_digest(recipe),
        "classes": list(classes),
        "template": recipe.template,
        "prompt_style": {"name": recipe.style.name, "prefix": recipe.style.prefix, "suffix": recipe.style.suffix},
        "top": recipe.top,
        "descriptor_scores_for": recipe.explain if recipe.explain is not None else "all",
        "probabilities": recipe.probabilities,
        "calibration": str(Path(recipe.calibration).resolve()) if recipe.calibration else None,
        "calibration_sha256": _file_digest(recipe.calibration),
        "min_probability": recipe.min_probability,
        "min_margin": recipe.min_margin,
        "multi_label": recipe.multi_label,
        "threshold": recipe.threshold,
        "review_margin": recipe.review_margin,
        "precision": recipe.precision,
        "logits": keeps_logits,
        "versions": _versions(backend),
        "command": list(command),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _file_digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).is_file() else None


def _versions(backend: str) -> dict:
    from explain.version import __version__

    found = {"descry": __version__, "python": sys.version.split()[0]}
    for package in ("torch", "transformers" if backend == "transformers" else "open_clip_torch"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def check_resumable(stored: Mapping | None, current: Mapping, out: Path) -> None:
    """Refuse to add rows made one way to a folder that holds rows made another."""
    if not stored:
        return
    differ = [key for key in IDENTITY if stored.get(key) != current.get(key)]
    if current.get("logits") and not stored.get("logits"):
        differ.append("logits (every class score, which this format needs)")
    if differ:
        raise ExplainError(
            f"{out} holds labels made with another {', '.join(differ)}; "
            "label into another --out, or delete its parts/ folder to start again"
        )
