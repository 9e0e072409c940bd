"""Confidence a user can act on: each family's own probabilities, temperature scaling, abstention,
risk-coverage, and per-class thresholds for several labels per image.

Everything here is maths on plain arrays of class scores (the mean
descriptor scores, in the model's logit units) and on small records; no
model, image or file format, except `Calibration`'s own JSON file.

    softmax probability  = softmax(scores / T) over the classes (CLIP's contrastive training)
    sigmoid probability  = sigmoid(score / T) per class, not normalised (SigLIP's pairwise training)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax
from sklearn.metrics import precision_recall_curve

from descriptors.prompts import DESCRY
from explain.errors import ExplainError, first_line
from explain.metrics import expected_calibration_error
from explain.scoring import softmax

PROBABILITY_KINDS = ("auto", "softmax", "sigmoid")
COVERAGE_POINTS = 100  # a risk-coverage curve is kept at 1%, 2%, ..., 100% coverage
SELECTIVE_TARGETS = (0.90, 0.95)


def resolve_kind(kind: str, sigmoid_loss: bool) -> str:
    """'softmax' or 'sigmoid': auto follows how the model was trained (SigLIP's sigmoid loss, CLIP's softmax)."""
    if kind not in PROBABILITY_KINDS:
        raise ExplainError(f"probabilities must be one of {', '.join(PROBABILITY_KINDS)}, not {kind!r}")
    if kind == "auto":
        return "sigmoid" if sigmoid_loss else "softmax"
    return kind


@dataclass(frozen=True)
class ProbabilityRule:
    """How class scores become probabilities: the kind, a fitted temperature, and per-class thresholds for
    several labels per image (sigmoid semantics: each class on its own)."""

    kind: str = "softmax"
    temperature: float = 1.0
    thresholds: Mapping[str, float] | None = None
    calibrated: bool = False

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """Probabilities of every class. # [..., n_classes] -> [..., n_classes]"""
        scaled = np.asarray(scores, dtype=np.float64) / self.temperature
        return softmax(scaled) if self.kind == "softmax" else expit(scaled)

    @property
    def name(self) -> str:
        """What the numbers are, for headings and records: 'softmax', 'sigmoid', 'softmax, calibrated'."""
        return self.kind + (", calibrated" if self.calibrated else "")

    def record(self) -> dict:
        return {"probabilities": self.kind, "temperature": self.temperature, "calibrated": self.calibrated}

    def labels(self, classes: Sequence[str], probabilities: np.ndarray, threshold: float = 0.5) -> list[str]:
        """Every class whose probability reaches its threshold (the fitted one where there is one), best first."""
        chosen = []
        for k in np.argsort(-np.asarray(probabilities), kind="stable"):
            limit = (self.thresholds or {}).get(classes[k], threshold)
            if probabilities[k] >= limit:
                chosen.append(classes[k])
        return chosen


def negative_log_likelihood(scores: np.ndarray, targets: np.ndarray, kind: str, temperature: float = 1.0) -> float:
    """Mean NLL of the true classes: -log p(target) for softmax; for sigmoid, the summed per-class binary
    cross-entropy against one-hot targets (the loss SigLIP is trained with), averaged over samples."""
    scaled = np.asarray(scores, dtype=np.float64) / temperature
    targets = np.asarray(targets)
    rows = np.arange(len(targets))
    if kind == "softmax":
        return float(-log_softmax(scaled, axis=1)[rows, targets].mean())
    sign = -np.ones_like(scaled)
    sign[rows, targets] = 1.0
    return float(-log_expit(sign * scaled).sum(axis=1).mean())


TEMPERATURE_BOUNDS = (1e-3, 1e3)


def fit_temperature(scores: np.ndarray, targets: np.ndarray, kind: str) -> float:
    """The temperature T minimising the NLL of probabilities(scores / T), searched over log T within
    `TEMPERATURE_BOUNDS`."""
    if len(targets) == 0:
        raise ExplainError("calibration needs at least one labelled image")
    low, high = TEMPERATURE_BOUNDS
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(scores, targets, kind, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": 1e-7},
    )
    return float(math.exp(found.x))


def confidence_and_correct(rule: ProbabilityRule, scores: np.ndarray, targets: np.ndarray):
    """The top class's probability and whether the top class is right, per sample (ties: the lower index)."""
    probabilities = rule(scores)
    predictions = np.asarray(scores).argmax(axis=1)
    return probabilities[np.arange(len(predictions)), predictions], predictions == np.asarray(targets)


def margins(scores: np.ndarray) -> np.ndarray:
    """Best class score minus the runner-up's, per sample (0 with one class)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape[1] < 2:
        return np.zeros(len(scores))
    two = -np.partition(-scores, 1, axis=1)[:, :2]
    return two[:, 0] - two[:, 1]


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Equal-width confidence bins (those with samples): range, count, mean confidence, accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    found = []
    for b in range(bins):
        members = which == b
        if members.any():
            found.append(
                {
                    "lower": float(edges[b]),
                    "upper": float(edges[b + 1]),
                    "count": int(members.sum()),
                    "confidence": float(confidence[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return found


def selective_accuracy(ranking: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Accuracy of the k most confident samples, k = 1..n, most confident first (ties: earlier sample
    first). # [n]"""
    order = np.argsort(-np.asarray(ranking, dtype=np.float64), kind="stable")
    hits = np.cumsum(np.asarray(correct, dtype=np.float64)[order])
    return hits / np.arange(1, len(order) + 1)


def aurc(ranking: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean over k = 1..n of the error of the k most confident
    (Geifman et al., 2019). Lower is better; a perfect ranking reaches the error the data allows."""
    if len(correct) == 0:
        return float("nan")
    return float((1.0 - selective_accuracy(ranking, correct)).mean())


def coverage_at(ranking: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The largest share of samples, most confident first, whose accuracy is at least `target` (0 if none)."""
    accuracy = selective_accuracy(ranking, correct)
    reached = np.nonzero(accuracy >= target - 1e-12)[0]
    return float((reached[-1] + 1) / len(accuracy)) if len(reached) else 0.0


def risk_coverage(ranking: np.ndarray, correct: np.ndarray) -> dict:
    """AURC, the coverage at 90% and 95% selective accuracy, and the curve at 1%..100% coverage."""
    n = len(correct)
    if n == 0:
        return {"aurc": float("nan"), "coverage": [], "accuracy": []}
    accuracy = selective_accuracy(ranking, correct)
    coverage = np.arange(1, COVERAGE_POINTS + 1) / COVERAGE_POINTS
    taken = np.maximum(1, np.ceil(coverage * n - 1e-9).astype(int))
    found = {"aurc": aurc(ranking, correct)}
    for target in SELECTIVE_TARGETS:
        found[f"coverage_at_{round(target * 100)}"] = coverage_at(ranking, correct, target)
    found["coverage"] = [float(c) for c in taken / n]
    found["accuracy"] = [float(a) for a in accuracy[taken - 1]]
    return found


def selective_metrics(scores: np.ndarray, targets: np.ndarray, rule: ProbabilityRule) -> dict:
    """Risk-coverage ranked by probability and by margin, and which ranking is better here (lower AURC)."""
    confidence, correct = confidence_and_correct(rule, scores, targets)
    found = {
        "by_probability": risk_coverage(confidence, correct),
        "by_margin": risk_coverage(margins(scores), correct),
    }
    a, b = found["by_probability"]["aurc"], found["by_margin"]["aurc"]
    found["better_ranking"] = "margin" if b < a else "probability"
    return found


def fit_thresholds(probabilities: np.ndarray, targets: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Per class, the probability threshold with the best F1 of "this class or not" on the data given; a
    class without positives keeps 1.0 (never chosen)."""
    found = {}
    for k, name in enumerate(classes):
        positive = np.asarray(targets) == k
        if not positive.any():
            found[name] = 1.0
            continue
        precision, recall, thresholds = precision_recall_curve(positive, probabilities[:, k])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        found[name] = float(thresholds[int(np.argmax(f1))])
    return found


@dataclass(frozen=True)
class Abstention:
    """When to give no label: the top probability below `min_probability`, or the score margin over the
    runner-up below `min_margin` (in score units). Zero turns a test off."""

    min_probability: float = 0.0
    min_margin: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.min_probability <= 1.0:
            raise ExplainError(f"--min-probability must be between 0 and 1, not {self.min_probability}")
        if self.min_margin < 0:
            raise ExplainError(f"--min-margin must be 0 or more, not {self.min_margin}")

    def reason(self, probability: float, margin: float, best: str, runner_up: str | None) -> str | None:
        """Why this prediction is withheld, in one line, or None to keep it."""
        between = f"unsure between {best} and {runner_up}" if runner_up else f"unsure about {best}"
        if probability < self.min_probability:
            return f"{between}: probability {probability:.3f} < {self.min_probability:g}"
        if runner_up is not None and margin < self.min_margin:
            return f"{between}: margin {margin:.3f} < {self.min_margin:g}"
        return None


@dataclass(frozen=True)
class Decision:
    """What is done with a ranking: one label, none (abstained, with the reason), or with `multi_label` every
    class whose probability reaches its threshold (the rule's fitted one, else `threshold`)."""

    abstention: Abstention = Abstention()
    multi_label: bool = False
    threshold: float = 0.5

    def __call__(self, rule: ProbabilityRule, classes: Sequence[str], scores, probabilities) -> dict:
        """{label, labels [{class, probability}], abstained, abstain_reason} for one image's class scores and
        probabilities (both [n_classes], in `classes` order); ties go to the earlier class."""
        scores, probabilities = np.asarray(scores, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        best = int(order[0])
        runner_up = int(order[1]) if len(order) > 1 else None
        if self.multi_label:
            chosen = rule.labels(classes, probabilities, self.threshold)
            reason = (
                None if chosen else f"no class reaches its threshold (best: {classes[best]} {probabilities[best]:.3f})"
            )
        else:
            margin = scores[best] - scores[runner_up] if runner_up is not None else 0.0
            reason = self.abstention.reason(
                float(probabilities[best]), float(margin), classes[best],
                classes[runner_up] if runner_up is not None else None,
            )  # fmt: skip
            chosen = [] if reason else [classes[best]]
        position = {name: k for k, name in enumerate(classes)} if chosen else {}
        return {
            "label": chosen[0] if chosen else None,
            "labels": [{"class": c, "probability": float(probabilities[position[c]])} for c in chosen],
            "abstained": reason is not None,
            "abstain_reason": reason,
        }


# --- calibration.json ---------------------------------------------------------------------------------------

IDENTITY = ("model", "method", "prompt_style", "probabilities")


@dataclass
class Calibration:
    """One fitted temperature (and per-class thresholds) for one model, method and prompt style."""

    model: str
    method: str
    prompt_style: dict
    probabilities: str
    temperature: float
    classes: list[str]
    data_sha256: str
    held_out: float
    seed: int
    n_fit: int
    n_held_out: int
    before: dict  # on the held-out share: ece, nll
    after: dict
    thresholds: dict[str, float] = field(default_factory=dict)
    reliability_before: list[dict] = field(default_factory=list)
    reliability_after: list[dict] = field(default_factory=list)
    warning: str | None = None  # said when the fit cannot be trusted as a calibration

    def rule(self) -> ProbabilityRule:
        return ProbabilityRule(self.probabilities, self.temperature, self.thresholds or None, calibrated=True)


def calibrate(
    scores: np.ndarray,
    targets: np.ndarray,
    classes: Sequence[str],
    kind: str,
    identity: Mapping,
    data_sha256: str,
    held_out: float = 0.3,
    seed: int = 0,
) -> Calibration:
    """Fit a temperature (and per-class thresholds) on a random (1 - held_out) share; ECE and NLL before
    and after are measured on the held-out rest, never on the data the fit saw."""
    n = len(targets)
    if not 0.0 <= held_out < 1.0:
        raise ExplainError(f"the held-out share must be at least 0 and below 1, not {held_out}")
    order = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(n * held_out))
    if cut < 1 or (held_out > 0 and cut >= n):
        raise ExplainError(f"{n} labelled images are too few to fit on {1 - held_out:.0%} and report on the rest")
    fit, report = order[:cut], (order[cut:] if held_out > 0 else order)
    temperature = fit_temperature(scores[fit], targets[fit], kind)
    plain, fitted = ProbabilityRule(kind), ProbabilityRule(kind, temperature)

    def measured(rule: ProbabilityRule) -> tuple[dict, list[dict]]:
        confidence, correct = confidence_and_correct(rule, scores[report], targets[report])
        nll = negative_log_likelihood(scores[report], targets[report], kind, rule.temperature)
        return {"ece": expected_calibration_error(confidence, correct), "nll": nll}, reliability(confidence, correct)

    before, bins_before = measured(plain)
    after, bins_after = measured(fitted)
    warning = None
    if temperature > TEMPERATURE_BOUNDS[1] * 0.99:
        warning = (
            f"the fit reached the largest temperature searched ({TEMPERATURE_BOUNDS[1]:g}): on these images the "
            "scores say almost nothing about the true class, so calibrated probabilities are near uniform"
        )
    elif temperature < TEMPERATURE_BOUNDS[0] * 1.01:
        warning = f"the fit reached the smallest temperature searched ({TEMPERATURE_BOUNDS[0]:g}): check the labels"
    return Calibration(
        identity["model"], identity["method"], dict(identity["prompt_style"]), kind, temperature, list(classes),
        data_sha256, held_out, seed, len(fit), len(report) if held_out > 0 else 0, before, after,
        fit_thresholds(fitted(scores[fit]), targets[fit], classes), bins_before, bins_after, warning,
    )  # fmt: skip


def data_digest(paths: Sequence[str], labels: Sequence[str]) -> str:
    """SHA-256 of the labelled samples a calibration was fitted on (paths and labels, in order)."""
    digest = hashlib.sha256()
    for path, label in zip(paths, labels, strict=True):
        digest.update(f"{path}\t{label}\n".encode())
    return digest.hexdigest()


def save_calibrations(path: Path, entries: Sequence[Calibration], source: str) -> Path:
    from explain.version import __version__

    document = {
        "descry": __version__,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "calibrations": [asdict(entry) for entry in entries],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_calibrations(path: str | Path) -> list[Calibration]:
    """Every entry of a calibration.json, or one clear line saying why the file cannot be used."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Calibration(**entry) for entry in document["calibrations"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExplainError(f"{path}: not a Descry calibration file ({first_line(error)})") from None


def style_record(style=None) -> dict:
    """A prompt style as calibrations and provenance record it (default: Descry's own)."""
    style = style or DESCRY
    return {"name": style.name, "prefix": style.prefix, "suffix": style.suffix}


def rule_for(
    model: str, sigmoid_loss: bool, kind: str = "auto", calibration: str | Path | None = None, style=None
) -> ProbabilityRule:
    """The probability rule a run uses: the model's kind (or the one asked for), with the temperature and
    thresholds of `calibration` when given, after checking that it was made for this model, the
    descriptors method, this prompt style and this kind."""
    resolved = resolve_kind(kind, sigmoid_loss)
    if calibration is None:
        return ProbabilityRule(resolved)
    current = _descriptors_identity(model, resolved, style)
    return choose_calibration(load_calibrations(calibration), current, calibration).rule()


def _descriptors_identity(model: str, kind: str, style) -> dict:
    """What a calibration for the descriptors method of this model, style and kind records about itself."""
    return {"model": model, "method": "descriptors", "prompt_style": style_record(style), "probabilities": kind}


def _made_for(entry: Calibration, current: Mapping) -> bool:
    return all(asdict(entry)[key] == current[key] for key in IDENTITY)


def calibrated_where_possible(calibration: str | Path | None, kind: str = "auto", style=None):
    """For a pool of models (the app): each model's rule, calibrated when `calibration` holds an entry for
    it (descriptors method, this style and kind), its own kind otherwise. The file is read once, now."""
    entries = load_calibrations(calibration) if calibration is not None else []

    def rule(name: str, model) -> ProbabilityRule:
        resolved = resolve_kind(kind, getattr(model, "sigmoid_loss", False))
        current = _descriptors_identity(name, resolved, style)
        chosen = next((entry for entry in entries if _made_for(entry, current)), None)
        return chosen.rule() if chosen is not None else ProbabilityRule(resolved)

    return rule


def choose_calibration(entries: Sequence[Calibration], current: Mapping, path: str | Path = "") -> Calibration:
    """The entry made for this model, method, prompt style and probability kind; otherwise refuse, naming
    what the file holds and what differs."""
    for entry in entries:
        if _made_for(entry, current):
            return entry
    closest = min(entries, key=lambda e: sum(asdict(e)[k] != current[k] for k in IDENTITY), default=None)
    if closest is None:
        raise ExplainError(f"{path}: holds no calibration")
    differ = [f"{k} {asdict(closest)[k]!r} (here {current[k]!r})" for k in IDENTITY if asdict(closest)[k] != current[k]]
    raise ExplainError(f"{path}: made for another {', '.join(differ)}; calibrate this model and method first")
