"""From image embeddings to label rows: the one scorer every engine and the FiftyOne model use.

Plain numpy, no model: the text embeddings of the descriptor prompts and
the template prompts are computed once and carried here, so that the local
loop, the driver of a Ray run and FiftyOne's `apply_model` score with
exactly the same numbers. A row holds the label, its probability, the top K
(class, score, probability), the template-alone label, the margin to the
runner-up, and the descriptor scores of the best classes: the label and
the runner-up by default (`LabelRecipe.explain`), ordered by class rank
and then by score, highest first. Probabilities follow the recipe's rule
(the model's own kind, or a calibration's); a row below the recipe's
probability or margin is abstained (no label, the reason, the scores kept),
and with `multi_label` its `labels` are every class passing its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from descriptors import PromptSet, build_prompts, template_prompts
from explain.confidence import Abstention, Decision, ProbabilityRule, rule_for
from explain.labelling.recipe import LabelRecipe
from explain.scoring import class_scores, descriptor_scores


@dataclass
class Labeller:
    """Everything needed to turn image embeddings into rows; small enough to ship anywhere."""

    plan: PromptSet  # classes are the names labels are written with
    text: np.ndarray  # [n_prompts, dim] descriptor prompts, unit norm
    template_text: np.ndarray  # [n_classes, dim] one template prompt per class, unit norm
    logit_scale: float
    logit_bias: float
    top: int = 5
    explain: int | None = 2  # classes whose descriptor scores a row keeps; None: every class
    keep_logits: bool = False  # every class score per row (FiftyOne's Classification.logits); large for big class lists
    rule: ProbabilityRule = ProbabilityRule()
    decision: Decision = Decision()

    @classmethod
    def build(cls, explainer, recipe: LabelRecipe, on_encode=None, keep_logits: bool = False) -> Labeller:
        match = recipe.match()
        plan = build_prompts(match.descriptors, recipe.template, recipe.style, match.labels)
        baseline = template_prompts(list(plan.classes), recipe.template, recipe.style, match.labels)
        text = explainer.text_embeddings([*plan.prompts, *baseline.prompts], on_encode)
        model = explainer.model
        rule = rule_for(
            recipe.model, getattr(model, "sigmoid_loss", False), recipe.probabilities, recipe.calibration, recipe.style
        )
        return cls(
            plan,
            text[: len(plan.prompts)],
            text[len(plan.prompts) :],
            model.logit_scale,
            model.logit_bias,
            recipe.top,
            recipe.explain,
            keep_logits,
            rule,
            Decision(Abstention(recipe.min_probability, recipe.min_margin), recipe.multi_label, recipe.threshold),
        )

    def rows(self, paths, embeddings: np.ndarray, errors) -> list[dict]:
        """One row per path; a path in `errors` (index -> reason) gets its reason and no label.
        embeddings: [n_paths, dim], unit norm (a failed path's row is ignored)."""
        per_prompt = descriptor_scores(embeddings, self.text, self.logit_scale, self.logit_bias)  # [n, n_prompts]
        scores = class_scores(per_prompt, self.plan.counts)  # [n, n_classes]
        probabilities = self.rule(scores)
        baseline = descriptor_scores(embeddings, self.template_text, self.logit_scale, self.logit_bias)
        baseline_probabilities = ProbabilityRule(self.rule.kind)(baseline.astype(np.float64))
        order = np.argsort(-scores, axis=1, kind="stable")  # ties: the lower class index, as argmax
        rows = []
        for i, path in enumerate(paths):
            if i in errors:
                rows.append(failed_row(path, errors[i]))
                continue
            rows.append(
                self._row(
                    path,
                    per_prompt[i],
                    scores[i],
                    probabilities[i],
                    order[i],
                    baseline[i],
                    baseline_probabilities[i],
                )
            )
        return rows

    def _row(self, path, per_prompt, scores, probabilities, order, baseline, baseline_probabilities) -> dict:
        classes = self.plan.classes
        first = int(order[0])
        base = int(np.argmax(baseline))
        kept = len(classes) if self.explain is None else min(self.explain, len(classes))
        row = {
            "path": path,
            "label": classes[first],
            "probability": float(probabilities[first]),
            "top": [
                {"class": classes[int(k)], "score": float(scores[int(k)]), "probability": float(probabilities[int(k)])}
                for k in order[: min(self.top, len(classes))]
            ],
            "baseline_label": classes[base],
            "baseline_probability": float(baseline_probabilities[base]),
            "margin": float(scores[first]) - float(scores[int(order[1])]) if len(classes) > 1 else None,
            "descriptors": [entry for k in order[:kept] for entry in self._explained(int(k), per_prompt)],
            "error": None,
        }
        row.update(self.decision(self.rule, classes, scores, probabilities))
        if self.keep_logits:
            row["logits"] = [float(v) for v in scores]
        return row

    def descriptor_score(self, embedding: np.ndarray, class_name: str, descriptor: str) -> float | None:
        """One descriptor's score for one image (the bar beside its heatmap); None when the class lacks it.
        embedding: [dim], unit norm"""
        k = self.plan.classes.index(class_name)
        span = self.plan.class_slice(k)
        for offset, text in enumerate(self.plan.descriptors[span]):
            if text == descriptor:
                vector = self.text[span.start + offset : span.start + offset + 1]
                return float(descriptor_scores(embedding[None, :], vector, self.logit_scale, self.logit_bias)[0, 0])
        return None

    def _explained(self, k: int, per_prompt: np.ndarray) -> list[dict]:
        """Class k's descriptor scores, highest first (ties keep the file's order)."""
        span = self.plan.class_slice(k)
        entries = [
            {"class": self.plan.classes[k], "descriptor": d, "score": float(s)}
            for d, s in zip(self.plan.descriptors[span], per_prompt[span], strict=True)
        ]
        return sorted(entries, key=lambda entry: -entry["score"])


def failed_row(path: str, reason: str) -> dict:
    """The row of an image that could not be labelled: its path and why, and no label."""
    return {
        "path": path,
        "label": None,
        "probability": None,
        "top": [],
        "baseline_label": None,
        "baseline_probability": None,
        "margin": None,
        "descriptors": [],
        "labels": [],
        "abstained": False,
        "abstain_reason": None,
        "error": reason,
    }
