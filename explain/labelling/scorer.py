"""From image embeddings to label rows: the one scorer both engines use.

Plain numpy, no model: the text embeddings of the descriptor prompts and
the template prompts are computed once (on the driver) and carried here, so
that a Ray actor or the local loop scores with exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from descriptors import DEFAULT_TEMPLATE, PromptSet, build_prompts, template_prompts
from explain.scoring import class_scores, descriptor_scores, softmax


@dataclass
class Labeller:
    """Everything needed to turn image embeddings into rows; small enough to ship to every actor."""

    plan: PromptSet
    text: np.ndarray  # [n_prompts, dim] descriptor prompts, unit norm
    template_text: np.ndarray  # [n_classes, dim] one template prompt per class, unit norm
    logit_scale: float
    logit_bias: float
    top: int = 5
    keep_logits: bool = False  # every class score per row (FiftyOne's Classification.logits); large for big class lists

    @classmethod
    def build(
        cls,
        explainer,
        descriptors: Mapping[str, Sequence[str]],
        top: int = 5,
        template: str = DEFAULT_TEMPLATE,
        on_encode=None,
        keep_logits: bool = False,
    ) -> Labeller:
        plan = build_prompts(descriptors, template)
        baseline = template_prompts(list(plan.classes), template)
        text = explainer.text_embeddings([*plan.prompts, *baseline.prompts], on_encode)
        model = explainer.model
        return cls(
            plan,
            text[: len(plan.prompts)],
            text[len(plan.prompts) :],
            model.logit_scale,
            model.logit_bias,
            top,
            keep_logits,
        )

    def rows(self, paths: Sequence[str], embeddings: np.ndarray, errors: Mapping[int, str]) -> list[dict]:
        """One row per path; a path in `errors` gets its reason and no label. embeddings: [n_paths, dim]"""
        per_prompt = descriptor_scores(embeddings, self.text, self.logit_scale, self.logit_bias)  # [n, n_prompts]
        scores = class_scores(per_prompt, self.plan.counts)  # [n, n_classes]
        probabilities = softmax(scores)
        baseline = descriptor_scores(embeddings, self.template_text, self.logit_scale, self.logit_bias)
        baseline_probabilities = softmax(baseline.astype(np.float64))
        order = np.argsort(-scores, axis=1, kind="stable")
        classes = self.plan.classes
        rows = []
        for i, path in enumerate(paths):
            if i in errors:
                rows.append(
                    {
                        "path": path,
                        "label": None,
                        "probability": None,
                        "top": [],
                        "baseline_label": None,
                        "baseline_probability": None,
                        "margin": None,
                        "descriptors": [],
                        "error": errors[i],
                    }
                )
                continue
            best = order[i, : max(1, min(self.top, len(classes)))]
            first = int(best[0])
            span = self.plan.class_slice(first)
            explained = sorted(
                (
                    {"descriptor": d, "score": float(s)}
                    for d, s in zip(self.plan.descriptors[span], per_prompt[i, span], strict=True)
                ),
                key=lambda item: item["score"],
                reverse=True,
            )
            runner_up = float(scores[i, order[i, 1]]) if len(classes) > 1 else float("nan")
            base = int(np.argmax(baseline[i]))
            rows.append(
                {
                    "path": path,
                    "label": classes[first],
                    "probability": float(probabilities[i, first]),
                    "top": [{"class": classes[int(k)], "probability": float(probabilities[i, int(k)])} for k in best],
                    "baseline_label": classes[base],
                    "baseline_probability": float(baseline_probabilities[i, base]),
                    "margin": float(scores[i, first]) - runner_up if len(classes) > 1 else None,
                    "descriptors": explained,
                    "error": None,
                    **({"logits": [float(v) for v in scores[i]]} if self.keep_logits else {}),
                }
            )
        return rows
