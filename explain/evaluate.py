"""Evaluating a dataset: every image against every class, three ways, per model.

The flow is one-way: files -> image embeddings (batched by a DataLoader,
cached on disk by file content) -> per-prompt scores -> class scores per
method (descriptors, template baseline, WaffleCLIP-style random
descriptors) -> metrics, views and descriptor diagnostics as plain dicts.
Writing files and HTML lives in `report`; the counting lives in `metrics`.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from descriptors import DescriptorError, PromptSet, build_prompts, normalise_name, template_prompt
from descriptors.tokens import clip_tokenizer
from explain.cache import EmbeddingStore
from explain.engine import Explainer
from explain.errors import ExplainError, first_line
from explain.images import open_image
from explain.metrics import classification_metrics, top_k
from explain.scoring import class_scores, descriptor_scores, softmax

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METHODS = ("descriptors", "baseline", "waffle")


@dataclass
class Dataset:
    """Image paths with their labels; `classes` in a fixed order (folder or first-seen order)."""

    paths: list[Path]
    labels: list[str]
    classes: list[str]

    @property
    def targets(self) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def subset(self, keep: Sequence[int]) -> Dataset:
        return Dataset([self.paths[i] for i in keep], [self.labels[i] for i in keep], self.classes)


def load_dataset(data: str | Path, limit: int | None = None, seed: int = 0) -> Dataset:
    """An ImageFolder tree (DATA/<class>/<image>) or a CSV of path,label; `limit` samples at random."""
    data = Path(data)
    if data.is_dir():
        folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        paths, labels = [], []
        for folder in folders:
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    paths.append(path)
                    labels.append(folder.name)
        classes = [folder.name for folder in folders]
    elif data.is_file():
        paths, labels = _read_csv(data)
        classes = list(dict.fromkeys(labels))
    else:
        raise ExplainError(f"{data}: no such dataset folder or CSV file")
    if not paths:
        raise ExplainError(f"{data}: no images found (expected DATA/<class>/<image> or a CSV of path,label)")
    dataset = Dataset(paths, labels, classes)
    if limit is not None and limit < len(paths):
        chosen = sorted(random.Random(seed).sample(range(len(paths)), limit))
        dataset = dataset.subset(chosen)
    return dataset


def _read_csv(path: Path) -> tuple[list[Path], list[str]]:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as error:
        raise ExplainError(f"{path}: cannot read the CSV ({error.__class__.__name__})") from None
    if rows and [cell.strip().lower() for cell in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    paths, labels = [], []
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise ExplainError(f"{path}: row {number} is not 'path,label'")
        image = Path(row[0].strip())
        paths.append(image if image.is_absolute() else path.parent / image)
        labels.append(row[1].strip())
    return paths, labels


def dataset_name_forms(name: str) -> list[str]:
    """Ways a dataset label may be written in a descriptor file, most literal first.

    "015.bonsai-101" (Caltech folders) also matches "bonsai"; "tree-frog" also "tree frog".
    """
    forms = [normalise_name(name)]
    bare = re.sub(r"^\d+[._-]", "", name)
    bare = re.sub(r"-101$", "", bare)
    for candidate in (bare, bare.replace("-", " ")):
        key = normalise_name(candidate)
        if key and key not in forms:
            forms.append(key)
    return forms


def match_classes(classes: Sequence[str], descriptors: Mapping[str, list[str]], strict: bool = False):
    """Descriptors for each dataset class, matched by name, never by position.

    Returns (descriptors keyed by dataset class, classes with no descriptors).
    With `strict`, a class without descriptors is an error.
    """
    by_key = {normalise_name(name): name for name in descriptors}
    matched, missing = {}, []
    for name in classes:
        key = next((form for form in dataset_name_forms(name) if form in by_key), None)
        values = [v for v in descriptors[by_key[key]] if v.strip()] if key else []
        matched[name] = values
        if not values:
            missing.append(name)
    if strict and missing:
        raise DescriptorError(f"{len(missing)} dataset classes have no descriptors: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    return matched, missing


def waffle_descriptors(descriptors: Mapping[str, list[str]], seed: int = 0) -> dict[str, list[str]]:
    """WaffleCLIP's control: as many random descriptors per class, alternating word pairs and character strings."""
    rng = random.Random(seed)
    words = _word_list()
    letters = "abcdefghijklmnopqrstuvwxyz"
    waffle = {}
    for name, values in descriptors.items():
        made = []
        for i in range(len(values)):  # a class without descriptors keeps its template fallback
            if i % 2 == 0:
                made.append(f"{rng.choice(words)} {rng.choice(words)}")
            else:
                made.append("".join(rng.choice(letters) for _ in range(rng.randint(6, 10))))
        waffle[name] = made
    return waffle


def _word_list() -> list[str]:
    """Plain English words from CLIP's own vocabulary (whole-word tokens of letters only)."""
    vocab = clip_tokenizer().get_vocab()
    return sorted(t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isalpha() and t[:-4].isascii() and 4 <= len(t) - 4 <= 9)


# --- image embeddings -----------------------------------------------------------------------------------


class _Files(torch.utils.data.Dataset):
    """Decodes and preprocesses one file per item, in DataLoader workers; failures come back as text."""

    def __init__(self, paths: Sequence[Path], image_processor: Callable):
        # Only the image processor travels to the workers, never the model.
        self.paths, self.image_processor = list(paths), image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            pixels = self.image_processor(images=[open_image(self.paths[index])], return_tensors="pt")
            return index, {k: v[0] for k, v in pixels.items()}, None
        except ExplainError as error:
            return index, None, str(error)
        except Exception as error:  # a worker must never take the whole run down
            return index, None, f"{self.paths[index]}: {first_line(error)}"


def _collate(items):
    good = [(i, pixels) for i, pixels, error in items if pixels is not None]
    failed = [(i, error) for i, _, error in items if error is not None]
    batch = {key: torch.stack([pixels[key] for _, pixels in good]) for key in good[0][1]} if good else {}
    return [i for i, _ in good], batch, failed


def file_key(path: Path) -> str:
    """Content hash of an image file: the disk cache key, independent of its name or folder."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_files(
    explainer: Explainer,
    paths: Sequence[Path],
    store: EmbeddingStore | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Unit-norm embeddings of image files, in order; unreadable files are reported, not fatal.

    Returns ([n_paths, dim] with zero rows for failures, {index: reason}).
    """
    model = explainer.model
    embeddings = np.zeros((len(paths), model.dim), np.float32)
    failures: dict[int, str] = {}
    keys: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            keys[i] = file_key(path)
        except OSError as error:
            failures[i] = f"{path}: cannot read ({error.__class__.__name__})"
    cached = store.get_many("image-file", model.key, list(set(keys.values()))) if store else {}
    todo = []
    for i, key in keys.items():
        if key in cached:
            embeddings[i] = cached[key]
        else:
            todo.append(i)
    if progress:
        progress(len(paths) - len(todo))
    loader = DataLoader(
        _Files([paths[i] for i in todo], model.image_processor), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate, persistent_workers=False,
    )  # fmt: skip
    for positions, batch, failed in loader:
        for position, reason in failed:
            failures[todo[position]] = reason
        if positions:
            vectors = model.encode_pixels(batch)
            rows = [todo[p] for p in positions]
            embeddings[rows] = vectors
            explainer.images_encoded += len(rows)
            if store:
                store.put_many("image-file", model.key, [(keys[r], embeddings[r]) for r in rows])
        if progress:
            progress(len(positions) + len(failed))
    return embeddings, failures


# --- scoring a whole dataset ----------------------------------------------------------------------------


@dataclass
class MethodScores:
    """One method's result on a dataset: class scores, and per-prompt scores where they explain something."""

    logits: np.ndarray  # [n_samples, n_classes] class scores
    plan: PromptSet | None = None
    prompt_scores: np.ndarray | None = None  # [n_samples, n_prompts], descriptors method only


@dataclass
class ModelEvaluation:
    model: str
    methods: dict[str, MethodScores] = field(default_factory=dict)


def score_dataset(
    explainer: Explainer,
    image_embeds: np.ndarray,
    descriptors: Mapping[str, list[str]],
    template: str,
    seed: int = 0,
    chunk: int = 4096,
) -> ModelEvaluation:
    """Class scores of every image for each method; `descriptors` is keyed by dataset class, in order."""
    model = explainer.model
    plans = {
        "descriptors": build_prompts(descriptors, template),
        "waffle": build_prompts(waffle_descriptors(descriptors, seed), template),
    }
    baseline_prompts = [template_prompt(name, template) for name in descriptors]
    evaluation = ModelEvaluation(model.name)
    for method, plan in plans.items():
        text = explainer.text_embeddings(list(plan.prompts))
        logits, kept = [], []
        for start in range(0, len(image_embeds), chunk):
            scores = descriptor_scores(image_embeds[start : start + chunk], text, model.logit_scale, model.logit_bias)
            logits.append(class_scores(scores, plan.counts))
            if method == "descriptors":
                kept.append(scores)
        evaluation.methods[method] = MethodScores(
            np.concatenate(logits), plan, np.concatenate(kept) if kept else None
        )
    text = explainer.text_embeddings(baseline_prompts)
    baseline = descriptor_scores(image_embeds, text, model.logit_scale, model.logit_bias).astype(np.float64)
    evaluation.methods["baseline"] = MethodScores(baseline)
    # Keep the documented method order.
    evaluation.methods = {m: evaluation.methods[m] for m in METHODS}
    return evaluation


def summarise(evaluation: ModelEvaluation, targets: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """metrics.json's entry for one model: method -> metrics."""
    return {method: classification_metrics(scores.logits, targets, classes) for method, scores in evaluation.methods.items()}


def descriptor_diagnostics(scores: MethodScores, targets: np.ndarray, baseline_logits: np.ndarray) -> list[dict]:
    """For each descriptor: how often it is the top descriptor of a correct prediction, and the
    change in top-1 accuracy when it alone is removed (its class then averages the others; a
    class left with none falls back to its template score, as at prediction time)."""
    logits, plan, per_prompt = scores.logits, scores.plan, scores.prompt_scores
    n_samples, n_classes = logits.shape
    predictions = logits.argmax(axis=1)
    correct = predictions == targets
    accuracy = correct.mean() if n_samples else float("nan")
    order = np.argsort(-logits, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1] if n_classes > 1 else order[:, 0]
    rows = np.arange(n_samples)
    results = []
    for c, class_name in enumerate(plan.classes):
        if class_name in plan.fallback:
            continue  # scored by its template alone: no descriptors to rank or remove
        span = plan.class_slice(c)
        block = per_prompt[:, span]  # [n_samples, n_c]
        count = block.shape[1]
        wins = correct & (predictions == c)
        top_descriptor = block[wins].argmax(axis=1) if wins.any() else np.array([], dtype=int)
        other = np.where(first == c, second, first)  # the best class other than c
        other_score = logits[rows, other]
        for j in range(count):
            if count > 1:
                new_score = (block.sum(axis=1) - block[:, j]) / (count - 1)
            else:
                new_score = baseline_logits[:, c]
            c_wins = (new_score > other_score) | ((new_score == other_score) & (c < other))
            new_correct = np.where(c_wins, targets == c, other == targets) if n_classes > 1 else targets == c
            results.append(
                {
                    "class": class_name,
                    "descriptor": plan.descriptors[span][j],
                    "top_in_correct": int((top_descriptor == j).sum()),
                    "correct_predictions": int(wins.sum()),
                    "ablation_delta": float(new_correct.mean() - accuracy) if n_samples else float("nan"),
                }
            )
    return results


def views(predictions: Mapping[str, np.ndarray], targets: np.ndarray, baseline: Mapping[str, np.ndarray]) -> dict:
    """Sample indices worth a look: pairwise disagreements, all wrong, exactly one right, method flips.

    `predictions` and `baseline` map model name -> predicted class per sample (descriptors and template).
    """
    right = {name: predicted == targets for name, predicted in predictions.items()}
    names = list(right)
    found: dict[str, list[int]] = {}
    for a in names:
        for b in names:
            if a != b:
                found[f"{a} right, {b} wrong"] = np.flatnonzero(right[a] & ~right[b]).tolist()
    stacked = np.stack([right[name] for name in names]) if names else np.zeros((0, len(targets)), bool)
    found["every model wrong"] = np.flatnonzero(~stacked.any(axis=0)).tolist()
    if len(names) > 1:
        found["exactly one model right"] = np.flatnonzero(stacked.sum(axis=0) == 1).tolist()
    for name in names:
        base_right = baseline[name] == targets
        found[f"{name}: descriptors right, baseline wrong"] = np.flatnonzero(right[name] & ~base_right).tolist()
        found[f"{name}: baseline right, descriptors wrong"] = np.flatnonzero(~right[name] & base_right).tolist()
    return found


def prediction_rows(dataset: Dataset, model: str, evaluation: ModelEvaluation) -> list[dict]:
    """predictions.csv rows: path, label, model, method, pred, confidence, top5."""
    rows = []
    for method, scores in evaluation.methods.items():
        probabilities = softmax(scores.logits)
        best = top_k(scores.logits, 5)
        for i, path in enumerate(dataset.paths):
            rows.append(
                {
                    "path": str(path), "label": dataset.labels[i], "model": model, "method": method,
                    "pred": dataset.classes[best[i, 0]], "confidence": f"{probabilities[i, best[i, 0]]:.6f}",
                    "top5": "|".join(dataset.classes[k] for k in best[i]),
                }
            )  # fmt: skip
    return rows


@dataclass
class EvaluationRun:
    """Everything an evaluation produced, ready for `report.write_report`."""

    dataset: Dataset  # the readable samples only
    evaluations: dict[str, ModelEvaluation]
    metrics: dict[str, dict[str, dict]]  # model -> method -> metrics
    diagnostics: dict[str, list[dict]]  # model -> descriptor rows
    views: dict[str, list[int]]
    missing: list[str]  # dataset classes scored by the template for lack of descriptors
    unreadable: dict[str, str]  # path -> reason


def run_evaluation(
    dataset: Dataset,
    descriptors: Mapping[str, list[str]],
    explainers: Mapping[str, Explainer],
    template: str,
    store: EmbeddingStore | None = None,
    batch_size: int = 32,
    workers: int = 2,
    seed: int = 0,
    strict: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> EvaluationRun:
    """Embed, score and summarise a dataset for each model; `progress(label, total)` makes a step counter."""
    matched, missing = match_classes(dataset.classes, descriptors, strict)
    embeddings, unreadable = {}, {}
    for name, explainer in explainers.items():
        step = progress(f"images, {name}", len(dataset.paths)) if progress else None
        embeddings[name], failures = embed_files(explainer, dataset.paths, store, batch_size, workers, step)
        unreadable.update({str(dataset.paths[i]): reason for i, reason in failures.items()})
    keep = [i for i, path in enumerate(dataset.paths) if str(path) not in unreadable]
    if not keep:
        raise ExplainError("no image in the dataset could be read")
    readable = dataset.subset(keep)
    targets = readable.targets
    evaluations, metrics, diagnostics = {}, {}, {}
    for name, explainer in explainers.items():
        evaluation = score_dataset(explainer, embeddings[name][keep], matched, template, seed)
        evaluations[name] = evaluation
        metrics[name] = summarise(evaluation, targets, readable.classes)
        diagnostics[name] = descriptor_diagnostics(
            evaluation.methods["descriptors"], targets, evaluation.methods["baseline"].logits
        )
    predicted = {name: e.methods["descriptors"].logits.argmax(axis=1) for name, e in evaluations.items()}
    baseline = {name: e.methods["baseline"].logits.argmax(axis=1) for name, e in evaluations.items()}
    return EvaluationRun(readable, evaluations, metrics, diagnostics, views(predicted, targets, baseline), missing, unreadable)
