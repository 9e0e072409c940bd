"""Evaluating a dataset: every image against every class, three ways, per model.

The flow is one-way: files -> image embeddings (`datasets.embed_files`, or
an engine's) -> per-prompt scores -> class scores per
method (descriptors, template baseline, WaffleCLIP's random-descriptor
control) -> metrics, views and descriptor diagnostics as plain dicts.
Dataset classes meet descriptor keys by name (`match_classes`), and the
prompts are written with the matched key, never the folder name. Writing
files and HTML lives in `report`; the counting lives in `metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from descriptors import DEFAULT_TEMPLATE, PromptSet, PromptStyle, build_prompts
from descriptors.names import ClassMatch, match_classes
from descriptors.prompts import DESCRY, template_prompts
from descriptors.waffle import DEFAULT_PAIRS, waffle_prompts
from explain.cache import EmbeddingStore
from explain.confidence import ProbabilityRule, confidence_and_correct, reliability, selective_metrics
from explain.datasets import Dataset, embed_files
from explain.engine import LONG_ENCODE, Explainer, OnEncode
from explain.errors import ExplainError
from explain.metrics import SCALAR_METRICS, classification_metrics, top_k
from explain.scoring import class_scores, descriptor_scores

METHODS = ("descriptors", "baseline", "waffle")


# --- scoring a whole dataset ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptRecipe:
    """How each method turns classes into prompts: the template, the style, and WaffleCLIP's control."""

    template: str = DEFAULT_TEMPLATE
    style: PromptStyle = DESCRY
    waffle_pairs: int = DEFAULT_PAIRS
    waffle_reps: int = 1
    seed: int = 0

    def waffle_seeds(self) -> list[int]:
        """One seed per repetition; the default 0..6 for seven reps are WaffleCLIP's own."""
        return [self.seed + rep for rep in range(self.waffle_reps)]


@dataclass
class MethodScores:
    """One method's result on a dataset: class scores, the prompts behind them, and per-prompt scores."""

    logits: np.ndarray  # [n_samples, n_classes] class scores
    plan: PromptSet | None = None
    prompt_scores: np.ndarray | None = None  # [n_samples, n_prompts], descriptors method only
    seed: int | None = None  # waffle repetitions only


@dataclass
class ModelEvaluation:
    """`methods` holds descriptors, baseline and waffle (its first repetition); `waffle_reps` every repetition."""

    model: str
    methods: dict[str, MethodScores] = field(default_factory=dict)
    waffle_reps: list[MethodScores] = field(default_factory=list)
    rule: ProbabilityRule = field(default_factory=ProbabilityRule)  # the descriptors method's probabilities

    def rule_of(self, method: str) -> ProbabilityRule:
        """The descriptors method's rule (a calibration's, perhaps); the other methods use the kind alone."""
        return self.rule if method == "descriptors" else ProbabilityRule(self.rule.kind)


def score_dataset(
    explainer: Explainer,
    image_embeds: np.ndarray,
    match: ClassMatch,
    recipe: PromptRecipe = PromptRecipe(),
    chunk: int = 4096,
    on_encode: OnEncode | None = None,
) -> ModelEvaluation:
    """Class scores of every image for each method, classes in `match`'s (dataset) order.

    `on_encode` is told how many new prompts each method needs (see `Explainer.text_embeddings`).
    """
    model = explainer.model
    descriptors, labels = match.descriptors, match.labels

    def scored(plan: PromptSet, keep_prompts: bool = False, seed: int | None = None) -> MethodScores:
        text = explainer.text_embeddings(list(plan.prompts), on_encode)
        logits, kept = [], []
        for start in range(0, len(image_embeds), chunk):
            scores = descriptor_scores(image_embeds[start : start + chunk], text, model.logit_scale, model.logit_bias)
            logits.append(class_scores(scores, plan.counts))
            if keep_prompts:
                kept.append(scores)
        empty = np.zeros((0, len(plan.classes)))
        return MethodScores(
            np.concatenate(logits) if logits else empty, plan, np.concatenate(kept) if kept else None, seed
        )

    evaluation = ModelEvaluation(model.name)
    evaluation.methods["descriptors"] = scored(
        build_prompts(descriptors, recipe.template, recipe.style, labels), keep_prompts=True
    )
    evaluation.methods["baseline"] = scored(template_prompts(list(descriptors), recipe.template, recipe.style, labels))
    for seed in recipe.waffle_seeds():
        evaluation.waffle_reps.append(scored(waffle_prompts(descriptors, recipe.waffle_pairs, seed, labels), seed=seed))
    evaluation.methods["waffle"] = evaluation.waffle_reps[0]
    return evaluation


def count_unreadable(summary: dict, unreadable: int) -> None:
    """Add to each method's metrics how many images could not be read (`n_unreadable`) and the top-1
    accuracy that counts each of them as wrong (`acc1_all`): what FiftyOne's evaluate_classifications
    reports for samples left without a prediction. The other metrics count the readable images only."""
    entries = [m for m in summary.values() if isinstance(m, dict)] + list(summary.get("waffle_reps", []))
    for metrics in entries:
        n = metrics["n_samples"]
        metrics["n_unreadable"] = unreadable
        metrics["acc1_all"] = metrics["acc1"] * n / (n + unreadable) if n + unreadable else float("nan")


def summarise(
    evaluation: ModelEvaluation, targets: np.ndarray, classes: list[str], rule: ProbabilityRule | None = None
) -> dict:
    """metrics.json's entry for one model: method -> metrics, and `waffle_reps`.

    Probabilities follow `rule` (the model's own kind; a calibration's
    temperature applies to the descriptors method it was fitted for, and
    then the uncalibrated numbers are kept under `before_calibration`).
    Every method gets its risk-coverage numbers (`selective`) and
    reliability bins. `waffle` is the mean over repetitions of every number
    (per-class ones too), with `std` (population standard deviation, as
    WaffleCLIP reports it) and `seeds`; `waffle_reps` lists each
    repetition's metrics.
    """
    rule = rule or ProbabilityRule()
    plain = ProbabilityRule(rule.kind)
    summary = {
        "descriptors": _method_metrics(evaluation.methods["descriptors"].logits, targets, classes, rule),
        "baseline": _method_metrics(evaluation.methods["baseline"].logits, targets, classes, plain),
    }
    if rule.calibrated:
        before = _method_metrics(evaluation.methods["descriptors"].logits, targets, classes, plain)
        summary["descriptors"]["before_calibration"] = {
            key: before[key] for key in ("mean_confidence", "ece", "reliability", "selective")
        }
    reps = []
    for scores in evaluation.waffle_reps:
        reps.append({"seed": scores.seed, **_method_metrics(scores.logits, targets, classes, plain)})
    summary["waffle"] = _mean_of_reps(reps)
    summary["waffle_reps"] = reps
    return summary


def _method_metrics(logits: np.ndarray, targets: np.ndarray, classes: list[str], rule: ProbabilityRule) -> dict:
    metrics = classification_metrics(logits, targets, classes, rule)
    confidence, correct = confidence_and_correct(rule, logits, targets)
    metrics["probabilities"] = rule.record()
    metrics["reliability"] = reliability(confidence, correct)
    metrics["selective"] = selective_metrics(logits, targets, rule)
    return metrics


def _mean_of_reps(reps: list[dict]) -> dict:
    mean: dict = {}
    for key, value in reps[0].items():
        if key == "seed":
            continue
        if key == "per_class":
            mean[key] = {
                name: {
                    m: float(np.mean([r[key][name][m] for r in reps])) if m != "support" else v
                    for m, v in entry.items()
                }
                for name, entry in value.items()
            }
        elif key == "confusion_matrix":
            mean[key] = np.mean([r[key] for r in reps], axis=0).tolist()
        elif key in ("n_samples", "probabilities"):
            mean[key] = value
        elif key == "reliability":  # bins differ between repetitions; each repetition keeps its own
            continue
        elif key == "selective":
            mean[key] = _mean_tree([r[key] for r in reps])
        else:
            mean[key] = float(np.mean([r[key] for r in reps]))
    mean["std"] = {key: float(np.std([r[key] for r in reps])) for key in SCALAR_METRICS}
    mean["seeds"] = [r["seed"] for r in reps]
    return mean


def _mean_tree(values: list):
    """The mean of equally shaped JSON values: numbers and lists of numbers averaged, text kept from the first."""
    first = values[0]
    if isinstance(first, dict):
        return {key: _mean_tree([v[key] for v in values]) for key in first}
    if isinstance(first, str):
        return first
    return np.mean(values, axis=0).tolist() if isinstance(first, list) else float(np.mean(values))


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
    # With several models, what all of them get wrong is a candidate label error; with one, it is its errors.
    found["every model wrong" if len(names) > 1 else "wrong"] = np.flatnonzero(~stacked.any(axis=0)).tolist()
    if len(names) > 1:
        found["exactly one model right"] = np.flatnonzero(stacked.sum(axis=0) == 1).tolist()
    for name in names:
        base_right = baseline[name] == targets
        found[f"{name}: descriptors right, baseline wrong"] = np.flatnonzero(right[name] & ~base_right).tolist()
        found[f"{name}: baseline right, descriptors wrong"] = np.flatnonzero(~right[name] & base_right).tolist()
    return found


def method_runs(evaluation: ModelEvaluation) -> list[tuple[str, MethodScores]]:
    """Every set of scores an evaluation holds, named as in predictions.csv and prompts.csv.

    The control is `waffle` when it ran once, `waffle-seed{S}` per repetition when it ran more.
    """
    runs = [("descriptors", evaluation.methods["descriptors"]), ("baseline", evaluation.methods["baseline"])]
    reps = evaluation.waffle_reps
    runs += [("waffle" if len(reps) == 1 else f"waffle-seed{scores.seed}", scores) for scores in reps]
    return runs


def prompt_rows(evaluation: ModelEvaluation) -> list[dict]:
    """prompts.csv rows: method, class, descriptor, prompt; every prompt that was encoded, in order."""
    rows = []
    for method, scores in method_runs(evaluation):
        plan = scores.plan
        for k, class_name in enumerate(plan.classes):
            span = plan.class_slice(k)
            rows.extend(
                {"method": method, "class": class_name, "descriptor": d, "prompt": p}
                for d, p in zip(plan.descriptors[span], plan.prompts[span], strict=True)
            )
    return rows


def prediction_rows(dataset: Dataset, model: str, evaluation: ModelEvaluation) -> list[dict]:
    """predictions.csv rows: path, label, model, method, pred, confidence, top5."""
    rows = []
    for method, scores in method_runs(evaluation):
        probabilities = evaluation.rule_of(method)(scores.logits)
        best = top_k(scores.logits, 5)
        for i, path in enumerate(dataset.paths):
            rows.append(
                {
                    "path": str(path),
                    "label": dataset.labels[i],
                    "model": model,
                    "method": method,
                    "pred": dataset.classes[best[i, 0]],
                    "confidence": f"{probabilities[i, best[i, 0]]:.6f}",
                    "top5": "|".join(dataset.classes[k] for k in best[i]),
                }
            )
    return rows


@dataclass
class EvaluationRun:
    """Everything an evaluation produced, ready for `report.write_report`."""

    dataset: Dataset  # the readable samples only
    evaluations: dict[str, ModelEvaluation]
    metrics: dict[str, dict]  # model -> method -> metrics, plus "waffle_reps": [metrics per repetition]
    diagnostics: dict[str, list[dict]]  # model -> descriptor rows
    views: dict[str, list[int]]
    missing: list[str]  # dataset classes scored by the template for lack of descriptors
    unreadable: dict[str, str]  # path -> reason
    recipe: PromptRecipe = field(default_factory=lambda: PromptRecipe())
    labels: dict[str, str] = field(default_factory=dict)  # dataset class -> the name its prompts use


def run_evaluation(
    dataset: Dataset,
    descriptors: Mapping[str, list[str]],
    explainers: Mapping[str, Explainer],
    recipe: PromptRecipe = PromptRecipe(),
    store: EmbeddingStore | None = None,
    batch_size: int = 32,
    workers: int = 2,
    strict: bool = False,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    embedder: Callable | None = None,
) -> EvaluationRun:
    """Embed, score and summarise a dataset for each model; `progress(label, total)` makes a step counter.

    `embedder(explainer, paths, step)` replaces the local DataLoader for the image embeddings (the Ray
    engine); it returns ([n_paths, dim] unit-norm embeddings, {index: reason}) like `embed_files`.
    """
    match = match_classes(dataset.classes, descriptors, strict)
    embeddings, unreadable = {}, {}
    for name, explainer in explainers.items():
        step = progress(f"images, {name}", len(dataset.paths)) if progress else None
        if embedder is not None:
            embeddings[name], failures = embedder(explainer, dataset.paths, step)
        else:
            embeddings[name], failures = embed_files(explainer, dataset.paths, store, batch_size, workers, step)
        unreadable.update({str(dataset.paths[i]): reason for i, reason in failures.items()})
    keep = [i for i, path in enumerate(dataset.paths) if str(path) not in unreadable]
    if not keep:
        raise ExplainError("no image in the dataset could be read")
    readable = dataset.subset(keep)
    targets = readable.targets
    evaluations, metrics, diagnostics = {}, {}, {}
    for name, explainer in explainers.items():

        def on_encode(total: int, name: str = name):
            return progress(f"prompts, {name}", total) if progress and total >= LONG_ENCODE else None

        evaluation = score_dataset(explainer, embeddings[name][keep], match, recipe, on_encode=on_encode)
        evaluation.rule = explainer.rule
        evaluations[name] = evaluation
        metrics[name] = summarise(evaluation, targets, readable.classes, explainer.rule)
        for method in METHODS:  # which number format the towers ran in
            metrics[name][method]["precision"] = getattr(explainer.model, "precision_name", "fp32")
        diagnostics[name] = descriptor_diagnostics(
            evaluation.methods["descriptors"], targets, evaluation.methods["baseline"].logits
        )
    for summary in metrics.values():
        count_unreadable(summary, len(unreadable))
    predicted = {name: e.methods["descriptors"].logits.argmax(axis=1) for name, e in evaluations.items()}
    baseline = {name: e.methods["baseline"].logits.argmax(axis=1) for name, e in evaluations.items()}
    found = views(predicted, targets, baseline)
    return EvaluationRun(
        readable, evaluations, metrics, diagnostics, found, match.missing, unreadable, recipe, match.labels
    )
