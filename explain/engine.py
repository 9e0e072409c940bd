"""The explainer: descriptors and an image in, a ranked, explained classification out.

`Explainer` joins the pieces in one direction: image -> embedding,
descriptors -> prompts -> embeddings, then per-descriptor scores -> class
scores -> sorted records. It owns the embedding caches, so editing one
descriptor re-encodes one prompt and a known image is never encoded twice.
The maths lives in `scoring`, the network in `models`, the records in
`results`; this module only wires them together.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from descriptors import (
    DEFAULT_TEMPLATE,
    DESCRY,
    DescriptorError,
    PromptSet,
    PromptStyle,
    build_prompts,
    template_prompt,
)
from explain.cache import EmbeddingLRU, EmbeddingStore
from explain.confidence import ProbabilityRule, resolve_kind
from explain.faithfulness import SEEDS, STEPS, faithfulness
from explain.images import content_key, open_image
from explain.models import EncoderModel
from explain.results import Classification, ClassScore, DescriptorHeatmap, DescriptorScore, Heatmaps
from explain.scoring import class_scores, descriptor_scores

OnEncode = Callable[[int], Callable[[int], None] | None]  # told how many prompts; may return a progress step
LONG_ENCODE = 256  # new prompts from which the CLI and the app show progress (about 2 s on a CPU)
PATCH_CACHE_BYTES = 64 * 2**20  # per-location embeddings for heatmaps: about 300 images of ViT-B/32 at 448 px
TEXT_CACHE_BYTES = 256 * 2**20  # ~130k prompts at 512 dimensions
IMAGE_CACHE_BYTES = 64 * 2**20  # ~32k images at 512 dimensions


class Explainer:
    """Scores images against descriptor sets with one model, caching every embedding.

    The caches are keyed by the model's fingerprint and precision, so an
    explainer can safely share an on-disk `store` with other models.
    `probabilities` is how class scores become probabilities: "auto" (the
    model's own: sigmoid for SigLIP, softmax otherwise), "softmax", "sigmoid",
    or a `ProbabilityRule` (a calibration's).
    """

    def __init__(
        self,
        model: EncoderModel,
        store: EmbeddingStore | None = None,
        text_cache_bytes: int = TEXT_CACHE_BYTES,
        image_cache_bytes: int = IMAGE_CACHE_BYTES,
        probabilities: str | ProbabilityRule = "auto",
    ):
        self.model = model
        self.store = store
        self.rule = probability_rule(model, probabilities)
        self._texts = EmbeddingLRU(text_cache_bytes)
        self._images = EmbeddingLRU(image_cache_bytes)
        self._patches = EmbeddingLRU(PATCH_CACHE_BYTES)  # switching descriptors never re-runs the image tower
        self.texts_encoded = 0  # prompts that went through the text encoder
        self.images_encoded = 0  # images that went through the image encoder

    def text_embeddings(self, prompts: Sequence[str], on_encode: OnEncode | None = None) -> np.ndarray:
        """Unit-norm embeddings of `prompts`, encoding only those never seen. # [n_prompts, dim]

        `on_encode(n)` is told, before encoding starts, how many prompts need
        the text encoder; it may return a `step(k)` that is called as they are
        done (a progress bar), or None.
        """
        unique = list(dict.fromkeys(prompts))
        found = self._lookup(self._texts, "text", unique)
        missing = [p for p in unique if p not in found]
        if missing:
            step = on_encode(len(missing)) if on_encode is not None else None
            encoded = self.model.encode_texts(missing, progress=step)
            self.texts_encoded += len(missing)
            self._remember(self._texts, "text", zip(missing, encoded, strict=True), found)
        return _stack([found[p] for p in prompts], self.model.dim)

    def image_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-norm embeddings of RGB images, keyed by pixel content. # [n_images, dim]"""
        keys = [content_key(image) for image in images]
        found = self._lookup(self._images, "image", list(dict.fromkeys(keys)))
        todo = {key: image for key, image in zip(keys, images, strict=True) if key not in found}
        if todo:
            encoded = self.model.encode_images(list(todo.values()))
            self.images_encoded += len(todo)
            self._remember(self._images, "image", zip(todo, encoded, strict=True), found)
        return _stack([found[key] for key in keys], self.model.dim)

    def classify(
        self,
        image: Image.Image | str | Path | bytes,
        descriptors: Mapping[str, Sequence[str]],
        template: str = DEFAULT_TEMPLATE,
        name: str | None = None,
        style: PromptStyle = DESCRY,
        on_encode: OnEncode | None = None,
    ) -> Classification:
        """Classify one image (a path, bytes or a PIL image) by its descriptors."""
        label = name or (str(image) if isinstance(image, (str, Path)) else "image")
        return self.classify_many([open_image(image, label)], descriptors, template, [label], style, on_encode)[0]

    def classify_many(
        self,
        images: Sequence[Image.Image],
        descriptors: Mapping[str, Sequence[str]],
        template: str = DEFAULT_TEMPLATE,
        names: Sequence[str] | None = None,
        style: PromptStyle = DESCRY,
        on_encode: OnEncode | None = None,
    ) -> list[Classification]:
        """Classify already-opened RGB images against the same classes, in one batch.

        `style` words the descriptor prompts (see `descriptors.PromptStyle`); the baseline uses `template`.
        """
        if not descriptors:
            raise DescriptorError("the class list is empty: give at least one class name")
        plan = build_prompts(descriptors, template, style)
        baseline_prompts = [template_prompt(c, template, style) for c in plan.classes]
        text = self.text_embeddings([*plan.prompts, *baseline_prompts], on_encode)  # [n_prompts + n_classes, dim]
        pixels = self.image_embeddings(images)  # [n_images, dim]
        scores = descriptor_scores(pixels, text, self.model.logit_scale, self.model.logit_bias)
        n_prompts = len(plan.prompts)
        by_descriptor, by_template = scores[:, :n_prompts], scores[:, n_prompts:]
        by_class = class_scores(by_descriptor, plan.counts)  # [n_images, n_classes]
        names = names or [f"image {i + 1}" for i in range(len(images))]
        return [
            Classification(
                image=names[i],
                model=self.model.name,
                predictions=_ranked_classes(plan, by_descriptor[i], by_class[i], self.rule),
                baseline=_ranked_baseline(plan.classes, by_template[i].astype(np.float64), self.rule),
                probabilities={**self.rule.record(), "precision": getattr(self.model, "precision_name", "fp32")},
            )
            for i in range(len(images))
        ]

    def heatmaps(
        self,
        image: Image.Image | str | Path | bytes,
        descriptors: Mapping[str, Sequence[str]],
        classes: Sequence[str] | None = None,
        size: int | None = None,
        alone: bool = False,
        template: str = DEFAULT_TEMPLATE,
        style: PromptStyle = DESCRY,
        name: str | None = None,
    ) -> Heatmaps:
        """Where each descriptor of `classes` (default: the top two) matches in the image.

        Each heatmap is the descriptor's score at every location of the tower's grid (features by the
        tower's map recipe, see `EncoderModel.patch_embeddings` and `map_method`) with the same prompt
        embedding that gives its bar; with `alone`, the prompt is the
        descriptor without its class name, since the class name tends to
        light up the whole object. Patch embeddings are cached per image and size.
        """
        label = name or (str(image) if isinstance(image, (str, Path)) else "image")
        picture = open_image(image, label)
        if classes is None:
            classes = [
                entry.name for entry in self.classify(picture, descriptors, template, label, style).predictions[:2]
            ]
        chosen = {c: list(descriptors.get(c, [])) for c in classes}
        plan = build_prompts(chosen, template, style)
        prompts = [
            d if alone and plan.classes[k] not in plan.fallback else p
            for k in range(len(plan.classes))
            for d, p in zip(plan.descriptors[plan.class_slice(k)], plan.prompts[plan.class_slice(k)], strict=True)
        ]
        patches = self._patch_embeddings(picture, size)  # [grid_h, grid_w, dim]
        height, width, dim = patches.shape
        text = self.text_embeddings(prompts)  # [n_prompts, dim]
        scores = descriptor_scores(
            patches.reshape(-1, dim), text, self.model.logit_scale, self.model.map_bias
        )  # [patches, prompts]
        grids = scores.T.reshape(len(prompts), height, width).astype(np.float32)
        owners = [plan.classes[k] for k in range(len(plan.classes)) for _ in range(plan.counts[k])]
        entries = tuple(
            DescriptorHeatmap(c, d, p, g) for c, d, p, g in zip(owners, plan.descriptors, prompts, grids, strict=True)
        )
        model = self.model
        region = model.map_region(picture)  # the part of the picture the grid covers
        how = (model.map_method, model.family, model.map_units, model.map_in_bar_units)
        return Heatmaps(label, model.name, size, alone, entries, region, *how)

    def with_faithfulness(
        self, image: Image.Image, heatmaps: Heatmaps, steps: int = STEPS, seeds: int = SEEDS
    ) -> Heatmaps:
        """`heatmaps` with each map's deletion and insertion test against random orders (see
        `explain.faithfulness`); the image forwards it takes are not cached."""
        picture = open_image(image, heatmaps.image)
        entries = []
        for entry in heatmaps.entries:
            prompt = self.text_embeddings([entry.prompt])

            def score(images, prompt=prompt):
                pixels = self.model.encode_images(images)
                return descriptor_scores(pixels, prompt, self.model.logit_scale, self.model.logit_bias)[:, 0]

            found = faithfulness(score, picture, entry.grid, heatmaps.region, steps, seeds)
            entries.append(replace(entry, faithfulness=found))
        return replace(heatmaps, entries=tuple(entries))

    def _patch_embeddings(self, picture: Image.Image, size: int | None) -> np.ndarray:
        key = f"{content_key(picture)}@{size or 'native'}"
        found = self._patches.get(self.model.key, key)
        if found is None:
            found = self.model.patch_embeddings(picture, size)
            self._patches.put(self.model.key, key, found)
        return found

    def _lookup(self, memory: EmbeddingLRU, kind: str, keys: list[str]) -> dict[str, np.ndarray]:
        found = memory.get_many(self.model.key, keys)
        if self.store is not None and len(found) < len(keys):
            from_disk = self.store.get_many(kind, self.model.key, [k for k in keys if k not in found])
            for key, vector in from_disk.items():
                memory.put(self.model.key, key, vector)
            found.update(from_disk)
        return found

    def _remember(self, memory: EmbeddingLRU, kind: str, items, found: dict[str, np.ndarray]) -> None:
        items = [(key, np.array(vector)) for key, vector in items]
        for key, vector in items:
            memory.put(self.model.key, key, vector)
            found[key] = vector
        if self.store is not None:
            self.store.put_many(kind, self.model.key, items)


def probability_rule(model: EncoderModel, probabilities: str | ProbabilityRule) -> ProbabilityRule:
    """The rule for this model: a kind ("auto" follows its training loss) or a rule as given."""
    if isinstance(probabilities, ProbabilityRule):
        return probabilities
    return ProbabilityRule(resolve_kind(probabilities, getattr(model, "sigmoid_loss", False)))


def _ranked_classes(
    plan: PromptSet, descriptor_row: np.ndarray, class_row: np.ndarray, rule: ProbabilityRule
) -> tuple[ClassScore, ...]:
    """Class records with descriptors, both sorted by score, highest first."""
    with _no_gc_pauses():
        return _build_ranked_classes(plan, descriptor_row, class_row, rule)


@contextmanager
def _no_gc_pauses():
    """Building tens of thousands of small records sets off Python's cycle collector again and again, and
    each pass walks every object alive (the embedding caches included): the cost grew faster than the
    class count. These records hold no cycles, so the collector can wait until they are built."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_ranked_classes(
    plan: PromptSet, descriptor_row: np.ndarray, class_row: np.ndarray, rule: ProbabilityRule
) -> tuple[ClassScore, ...]:
    probabilities = rule(class_row).tolist()
    scores, class_values = descriptor_row.tolist(), class_row.tolist()  # plain floats: far cheaper per element
    records = []
    for k, class_name in enumerate(plan.classes):
        span = plan.class_slice(k)
        entries = [
            DescriptorScore(*entry)
            for entry in zip(plan.descriptors[span], plan.prompts[span], scores[span], strict=True)
        ]
        entries.sort(key=lambda d: d.score, reverse=True)
        fallback = class_name in plan.fallback
        records.append(ClassScore(class_name, class_values[k], probabilities[k], tuple(entries), fallback))
    return tuple(sorted(records, key=lambda r: r.score, reverse=True))


def _ranked_baseline(classes: Sequence[str], template_row: np.ndarray, rule: ProbabilityRule) -> tuple[ClassScore, ...]:
    probabilities = ProbabilityRule(rule.kind)(template_row)  # the model's own kind; calibrations fit descriptors
    records = [ClassScore(c, float(s), float(p)) for c, s, p in zip(classes, template_row, probabilities, strict=True)]
    return tuple(sorted(records, key=lambda r: r.score, reverse=True))


def _stack(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
