"""Descry inside FiftyOne: a model for `apply_model`, and the loader for `label --format fiftyone` exports.

`DescryModel` is a FiftyOne `Model`: `dataset.apply_model(DescryModel(descriptors), label_field="descry")`
gives every sample a `Classification` with `label`, `confidence` and
`logits` (every class score, in `model.classes` order) in FiftyOne's own
fields, and the explanation as attributes: `top` (class, score,
probability), `baseline_label` and `baseline_probability` (the template
alone), `margin`, and `descriptors` (class, descriptor, score) of the label
and the runner-up. The attributes are the rows `explain label` writes, made
by the same `Labeller`. Images are read by Descry's own reader in FiftyOne's
DataLoader workers, so an unreadable file is one sample without a label
(and, with `error_field`, the reason in that field), never a lost batch.
With `heatmaps`, the model also writes FiftyOne `Heatmap` fields that the
App draws over the image: where each of the label's strongest descriptors
(or each named one) matches, in score units, on one colour range per image.
`classes` writes labels with the dataset's own names (its folder or
ground-truth names), matched to the descriptor keys by name, so that
`evaluate_classifications` compares like with like. With a calibration,
`min_probability` or `min_margin`, a withheld label leaves the sample
without one, tagged `descry:abstained` with the reason in
`descry_abstained`; samples below `review_margin` are tagged
`descry:low-margin`; `save_review_view` saves the view of both, lowest
margin first. `multi_label` gives `Classifications`.

This module imports FiftyOne, which is optional: install
requirements-fiftyone.txt. Nothing else in Descry imports it.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import fiftyone as fo
import fiftyone.core.models as fom
import fiftyone.utils.torch as fout
import numpy as np
import torch
from PIL import Image

from descriptors import DEFAULT_TEMPLATE, PromptStyle
from descriptors.prompts import DESCRY
from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError, first_line
from explain.heatmap_drawing import upsampled
from explain.images import open_image
from explain.labelling.outputs import fiftyone_label, review_tags
from explain.labelling.recipe import LabelRecipe
from explain.labelling.scorer import Labeller
from explain.models import DEFAULT_MODEL, load_model

REVIEW_TAGS = ("descry:abstained", "descry:low-margin")
REVIEW_VIEW = "descry-review"  # the saved view of what to review first
ABSTAINED_FIELD = "descry_abstained"  # why a sample's label was withheld
MARGIN_FIELD = "descry_margin"  # a review sample's margin (score units), to sort the review by
PIXELS_PER_PATCH = 8  # a heatmap's resolution: enough for the App to draw each patch as a soft square


@dataclass
class _Read:
    """One sample as a DataLoader worker read it: its pixels, or why they could not be had."""

    path: str
    pixels: dict | None = None  # the model's inputs for this one image
    image: Image.Image | None = None  # kept only when heatmaps are asked for
    error: str | None = None


class _ReadImage(fout.GetItem):
    """Reads a sample's file with Descry's reader (header checks and all) and preprocesses it, in a worker.
    Never raises: FiftyOne drops a whole batch for one exception, so a failure travels as a `_Read`."""

    def __init__(self, image_processor, keep_image: bool, field_mapping=None):
        self.image_processor = image_processor
        self.keep_image = keep_image
        super().__init__(field_mapping=field_mapping)

    @property
    def required_keys(self):
        return ["filepath"]

    def __call__(self, d) -> _Read:
        path = d["filepath"]
        try:
            image = open_image(path)
            pixels = self.image_processor(images=[image], return_tensors="pt")
            return _Read(path, {k: v[0] for k, v in pixels.items()}, image if self.keep_image else None)
        except ExplainError as error:
            return _Read(path, error=str(error))
        except Exception as error:  # a worker must never take the run down
            return _Read(path, error=f"{path}: {first_line(error)}")


class DescryModel(fom.Model, fom.LogitsMixin, fom.SamplesMixin, fom.SupportsGetItem, fom.TorchModelMixin):
    """Classification by description for `apply_model`, each label with its explanation.

    descriptors: {class: [descriptor, ...]}. model: any name `--model` takes. classes: the names labels
    are written with (default: the descriptor keys). heatmaps: how many of the label's strongest
    descriptors get a map (an int), or which ones ("class: descriptor" or a descriptor only one class
    has); each goes into its own field, `{heatmap_field}_{rank}` or `{heatmap_field}_{name}`.
    error_field: a field that receives why an image could not be read. logits: store every class score.
    """

    def __init__(
        self,
        descriptors: Mapping[str, Sequence[str]],
        model: str = DEFAULT_MODEL,
        classes: Sequence[str] | None = None,
        *,
        top: int = 5,
        explain: int | None = 2,
        template: str = DEFAULT_TEMPLATE,
        style: PromptStyle = DESCRY,
        device: str = "auto",
        heatmaps: int | Sequence[str] | None = None,
        heatmap_field: str = "descry_heatmap",
        error_field: str | None = None,
        logits: bool = True,
        store: EmbeddingStore | None = None,
        probabilities: str = "auto",
        calibration: str | None = None,
        min_probability: float = 0.0,
        min_margin: float = 0.0,
        multi_label: bool = False,
        threshold: float = 0.5,
        review_margin: float = 1.0,
        precision: str = "auto",
    ):
        fom.LogitsMixin.__init__(self)
        fom.SamplesMixin.__init__(self)
        self.config = types.SimpleNamespace()  # FiftyOne applies thresholds and class filters itself
        self.recipe = LabelRecipe(
            model, descriptors, tuple(classes) if classes else None, template, style, top, explain, None,
            probabilities, calibration, min_probability, min_margin, multi_label, threshold, review_margin, precision,
        )  # fmt: skip
        self._match = self.recipe.match()
        self.explainer = Explainer(load_model(model, device, precision), store=store)
        self.labeller = Labeller.build(self.explainer, self.recipe, keep_logits=True)
        self.store_logits = logits
        self.error_field = error_field
        self.maps = _MapChoice(heatmaps, heatmap_field, self._match.descriptors) if heatmaps else None
        if self.maps:
            self.explainer.model.check_heatmaps()  # refused here, with the tower's reason, before any sample
        self._preprocess = True

    # --- what FiftyOne asks of a model ---------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        """The label names, in the order of `logits`."""
        return list(self.labeller.plan.classes)

    @property
    def media_type(self):
        return "image"

    @property
    def has_logits(self):
        return True

    @property
    def ragged_batches(self):
        return False  # every item is a `_Read`; the collate function keeps them as a list

    @property
    def transforms(self):
        return None

    @property
    def preprocess(self):
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value):
        self._preprocess = value

    @property
    def has_collate_fn(self):
        return True

    @staticmethod
    def collate_fn(batch):
        return list(batch)

    def build_get_item(self, field_mapping=None):
        return _ReadImage(self.explainer.model.image_processor, self.maps is not None, field_mapping)

    def predict(self, arg, sample=None):
        return self.predict_all([arg], [sample] if sample is not None else None)[0]

    def predict_all(self, args, samples=None):
        reads = [arg if isinstance(arg, _Read) else self._read_array(arg) for arg in args]
        good = [i for i, read in enumerate(reads) if read.pixels is not None]
        dim = self.explainer.model.dim
        embeddings = np.zeros((len(reads), dim), np.float32)
        if good:
            batch = {key: torch.stack([reads[i].pixels[key] for i in good]) for key in reads[good[0]].pixels}
            embeddings[good] = self.explainer.model.encode_pixels(batch)
        errors = {i: read.error for i, read in enumerate(reads) if read.error is not None}
        rows = self.labeller.rows([read.path for read in reads], embeddings, errors)
        samples = list(samples) if samples is not None else [None] * len(reads)
        labels = []
        for read, row, sample in zip(reads, rows, samples, strict=True):
            labels.append(self._classification(row))
            if sample is not None and row["error"] and self.error_field:
                sample[self.error_field] = row["error"]
            if sample is not None and not row["error"]:
                _tag_for_review(sample, row, self.recipe.review_margin)
            if sample is not None and self.maps and read.image is not None and row["label"] is not None:
                for field, heatmap in self._heatmaps(read.image, row, embeddings[len(labels) - 1]).items():
                    sample[field] = heatmap
        return labels

    # --- Descry's side ---------------------------------------------------------------------------------------

    def _read_array(self, arg) -> _Read:
        """An image handed over directly (FiftyOne's uint8 HWC array, or a PIL image), preprocessed here."""
        try:
            image = arg if isinstance(arg, Image.Image) else Image.fromarray(np.asarray(arg, dtype=np.uint8))
            image = open_image(image, "image")
            pixels = self.explainer.model.image_processor(images=[image], return_tensors="pt")
            return _Read("image", {k: v[0] for k, v in pixels.items()}, image if self.maps else None)
        except ExplainError as error:
            return _Read("image", error=str(error))

    def _classification(self, row: dict) -> fo.Classification | fo.Classifications | None:
        found = fiftyone_label(row, self.recipe.multi_label)
        if found is None:
            return None
        made = []
        for entry in found if isinstance(found, list) else [found]:
            attributes = dict(entry["attributes"])
            if not self.store_logits:
                attributes.pop("logits")
            made.append(fo.Classification(label=entry["label"], confidence=entry["confidence"], **attributes))
        return fo.Classifications(classifications=made) if isinstance(found, list) else made[0]

    def _heatmaps(self, image: Image.Image, row: dict, embedding: np.ndarray) -> dict[str, fo.Heatmap]:
        """The chosen descriptors' heatmaps for one image, as FiftyOne labels on one colour range."""
        chosen = self.maps.pick(row)  # {field: (class, descriptor)}
        if not chosen:
            return {}
        labels = self._match.labels  # class -> the name its prompts use
        wanted = list(dict.fromkeys(labels[c] for c, _ in chosen.values()))
        by_prompt_name = {labels[c]: self._match.descriptors[c] for c in self._match.descriptors}
        maps = self.explainer.heatmaps(
            image, by_prompt_name, wanted, None, False, self.recipe.template, self.recipe.style, "image"
        )
        found = {field: maps.find(labels[c], d) for field, (c, d) in chosen.items()}
        low = min(float(entry.grid.min()) for entry in found.values())
        high = max(float(entry.grid.max()) for entry in found.values())
        out = {}
        for field, entry in found.items():
            score = self.labeller.descriptor_score(embedding, chosen[field][0], entry.descriptor)
            out[field] = fo.Heatmap(
                map=heatmap_canvas(entry.grid, maps.region, image.size),
                range=[low, high],
                class_name=chosen[field][0],
                descriptor=entry.descriptor,
                prompt=entry.prompt,
                score=score,
                method=maps.method,
                units=maps.units,
            )
        return out


def _tag_for_review(sample, row: dict, review_margin: float) -> None:
    """Sample tags for what to review first (abstained, low margin), the margin to sort them by, and why a
    label was withheld."""
    _mark(sample, review_tags(row, review_margin), row["margin"], row.get("abstain_reason"))


def _mark(sample, tags: Sequence[str], margin: float | None, reason: str | None) -> None:
    if not tags:
        return
    sample.tags.extend(tag for tag in tags if tag not in sample.tags)
    sample[MARGIN_FIELD] = margin
    if reason:
        sample[ABSTAINED_FIELD] = reason


def save_review_view(dataset: fo.Dataset, name: str = REVIEW_VIEW) -> None:
    """A saved view of the samples to review first: abstained or low-margin, lowest margin first."""
    dataset.save_view(name, dataset.match_tags(list(REVIEW_TAGS)).sort_by(MARGIN_FIELD), overwrite=True)


class _MapChoice:
    """Which descriptors get a heatmap field: the label's `n` strongest, or the named ones."""

    def __init__(self, heatmaps: int | Sequence[str], prefix: str, descriptors: Mapping[str, list[str]]):
        self.prefix = prefix
        if isinstance(heatmaps, int):
            if heatmaps < 1:
                raise ValueError(f"heatmaps must be at least 1, not {heatmaps}")
            self.strongest, self.named = heatmaps, {}
            return
        self.strongest, self.named = 0, {}
        for text in heatmaps:
            pair = _find_descriptor(text, descriptors)
            field = f"{prefix}_{_slug(' '.join(pair) if ':' in text else pair[1])}"
            if field in self.named:
                raise ValueError(f"two heatmaps would share the field {field!r}")
            self.named[field] = pair

    def pick(self, row: dict) -> dict[str, tuple[str, str]]:
        if not self.strongest:
            return dict(self.named)
        mine = [d for d in row["descriptors"] if d["class"] == row["label"]][: self.strongest]  # highest first
        return {f"{self.prefix}_{k}": (d["class"], d["descriptor"]) for k, d in enumerate(mine, 1)}


def _find_descriptor(text: str, descriptors: Mapping[str, list[str]]) -> tuple[str, str]:
    """("class", "descriptor") from "class: descriptor", or from a descriptor that only one class has."""
    from descriptors.names import normalise_name

    name, _, descriptor = text.rpartition(":") if ":" in text else ("", "", text)
    descriptor = descriptor.strip()
    owners = [
        c
        for c, values in descriptors.items()
        if descriptor in values and (not name or normalise_name(c) == normalise_name(name))
    ]
    if not owners:
        raise ValueError(f"no class has the descriptor {text!r}")
    if len(owners) > 1:
        raise ValueError(f"{descriptor!r} belongs to {', '.join(owners)}; write it as 'class: descriptor'")
    return owners[0], descriptor


def _slug(text: str) -> str:
    """A field-name-safe form: lower case, letters, digits and underscores, at most 48 characters."""
    return re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_")[:48] or "map"


def heatmap_canvas(grid: np.ndarray, region: tuple[int, int, int, int], image_size: tuple[int, int]) -> np.ndarray:
    """A heatmap laid out over the whole image, as FiftyOne stretches a map to the image it belongs to: the
    grid, interpolated as the app draws it, over `region` (the part the model saw), and 0 elsewhere, which
    the App leaves transparent. In score units. # [height, width] float32"""
    width, height = image_size
    left, top, right, bottom = region if region[2] > region[0] else (0, 0, width, height)
    scale = PIXELS_PER_PATCH * grid.shape[1] / max(right - left, 1)
    canvas = np.zeros((max(1, round(height * scale)), max(1, round(width * scale))), np.float32)
    x0, y0 = round(left * scale), round(top * scale)
    x1, y1 = max(x0 + 1, round(right * scale)), max(y0 + 1, round(bottom * scale))
    canvas[y0:y1, x0:x1] = upsampled(grid, (x1 - x0, y1 - y0))
    return canvas


def load_labels(
    folder: str | Path,
    name: str | None = None,
    label_field: str = "descry",
    error_field: str | None = "descry_error",
) -> fo.Dataset:
    """A FiftyOne dataset from `explain label --format fiftyone`'s folder (OUT/fiftyone): the labels in
    `label_field`, why an image has none in `error_field`, and the run's provenance in `dataset.info`."""
    folder = Path(folder)
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(folder),
        dataset_type=fo.types.FiftyOneImageClassificationDataset,
        data_path="data.json",
        label_field=label_field,
        name=name,
    )
    errors = (
        json.loads((folder / "errors.json").read_text(encoding="utf-8")) if (folder / "errors.json").exists() else {}
    )
    if errors and error_field:
        for sample in dataset.select_by("filepath", list(errors)):
            sample[error_field] = errors[sample.filepath]
            sample.save()
    review = folder / "review.json"
    review = json.loads(review.read_text(encoding="utf-8")) if review.exists() else {}
    if review:
        for sample in dataset.select_by("filepath", list(review)):
            entry = review[sample.filepath]
            _mark(sample, entry["tags"], entry["margin"], entry.get("abstain_reason"))
            sample.save()
        save_review_view(dataset)
    provenance = folder / "provenance.json"
    if provenance.exists():
        dataset.info["descry"] = json.loads(provenance.read_text(encoding="utf-8"))
        dataset.save()
    return dataset
