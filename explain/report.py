"""Writing an evaluation to disk: metrics.json, predictions.csv, prompts.csv, views.json, diagnostics.json, report.html.

The HTML report is one self-contained file: plotly.js is inlined once, and
sample thumbnails are embedded as small JPEG data URIs. Every piece of user
text (paths, class names, descriptors) is HTML-escaped. Nothing here scores
anything; it formats an `EvaluationRun`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from explain.charts import safe
from explain.confidence import style_record
from explain.evaluate import METHODS, EvaluationRun, prediction_rows, prompt_rows
from explain.images import open_image
from explain.metrics import SCALAR_METRICS as SUMMARY_METRICS
from explain.spreadsheet import write_rows

THUMBNAILS_PER_VIEW = 24
THUMBNAIL_SIZE = 112


def write_report(run: EvaluationRun, out: str | Path, title: str = "Descry evaluation") -> dict[str, Path]:
    """Write every output file into `out`; returns their paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = (
        "metrics.json",
        "predictions.csv",
        "prompts.csv",
        "classes.json",
        "views.json",
        "diagnostics.json",
        "report.html",
    )
    paths = {name: out / name for name in names}
    paths["metrics.json"].write_text(
        json.dumps(_finite(run.metrics), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    with open(paths["predictions.csv"], "w", newline="", encoding="utf-8") as handle:
        rows = (row for model, e in run.evaluations.items() for row in prediction_rows(run.dataset, model, e))
        write_rows(handle, ["path", "label", "model", "method", "pred", "confidence", "top5"], rows)
    with open(paths["prompts.csv"], "w", newline="", encoding="utf-8") as handle:
        # The prompts do not depend on the model: every model encoded exactly these texts.
        write_rows(
            handle, ["method", "class", "descriptor", "prompt"], prompt_rows(next(iter(run.evaluations.values())))
        )
    # Each dataset class and the name its prompts used (its descriptor key, or a readable name).
    labels = {name: run.labels.get(name, name) for name in run.dataset.classes}
    paths["classes.json"].write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    named_views = {name: [str(run.dataset.paths[i]) for i in indices] for name, indices in run.views.items()}
    paths["views.json"].write_text(json.dumps(named_views, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["diagnostics.json"].write_text(
        json.dumps(_finite(run.diagnostics), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    paths["report.html"].write_text(render_html(run, title), encoding="utf-8")
    paths["scores.npz"] = write_scores(run, out / "scores.npz")
    return paths


def write_scores(run: EvaluationRun, path: Path) -> Path:
    """Every class score behind the metrics, for `explain calibrate`: per model and method an [n, classes]
    array, with the true classes, the paths, and what made them (models, prompt style, probability kind)."""
    arrays = {"targets": run.dataset.targets}
    about = {
        "classes": list(run.dataset.classes),
        "paths": [str(p) for p in run.dataset.paths],
        "prompt_style": style_record(run.recipe.style),
        "models": [],
    }
    for i, (model, evaluation) in enumerate(run.evaluations.items()):
        about["models"].append({"name": model, "probabilities": evaluation.rule.kind})
        for method in METHODS:
            arrays[f"scores_{i}_{method}"] = evaluation.methods[method].logits
    arrays["about"] = np.array(json.dumps(about, ensure_ascii=False))
    with open(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def render_html(run: EvaluationRun, title: str) -> str:
    figures = []

    def figure_html(figure: go.Figure) -> str:
        figures.append(figure)
        return figure.to_html(full_html=False, include_plotlyjs=len(figures) == 1, config={"displaylogo": False})

    parts = [f"<h1>{html.escape(title)}</h1>", _overview(run), "<h2>Metrics</h2>", _metrics_table(run)]
    parts += ["<h2>Confidence you can act on</h2>", _selective_table(run)]
    for model, metrics in run.metrics.items():
        parts.append(f"<h2>{html.escape(model)}</h2>")
        parts.append(figure_html(_confusion_figure(metrics["descriptors"], run.dataset.classes, model)))
        parts.append(figure_html(_recall_figure(metrics, run.dataset.classes)))
        descriptors = metrics["descriptors"]
        curves = {"descriptors": descriptors["reliability"], "baseline": metrics["baseline"]["reliability"]}
        if "before_calibration" in descriptors:
            curves = {
                "descriptors, before calibration": descriptors["before_calibration"]["reliability"],
                "descriptors, calibrated": descriptors["reliability"],
            }
        parts.append(figure_html(reliability_figure(curves, descriptors["probabilities"]["probabilities"])))
        parts.append(figure_html(_risk_coverage_figure(metrics)))
        parts.append(_diagnostics_html(run.diagnostics[model]))
    parts.append("<h2>Views</h2>")
    parts.append(_views_html(run))
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1f2733; padding: 0 1rem; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border-bottom: 1px solid #dde3ea; padding: 0.3rem 0.7rem; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.thumbs {{ display: flex; flex-wrap: wrap; gap: 0.5rem; }}
figure {{ margin: 0; width: {THUMBNAIL_SIZE + 8}px; font-size: 0.75rem; overflow-wrap: anywhere; }}
figure img {{ width: {THUMBNAIL_SIZE}px; height: {THUMBNAIL_SIZE}px; object-fit: cover; border-radius: 4px; }}
.note {{ color: #5c6675; }}
</style></head>
<body>
{body}
</body></html>
"""


def _overview(run: EvaluationRun) -> str:
    recipe = run.recipe
    reps = (
        f", mean of {recipe.waffle_reps} seeds ({', '.join(map(str, recipe.waffle_seeds()))})"
        if recipe.waffle_reps > 1
        else f", seed {recipe.seed}"
    )
    style = html.escape(recipe.style.name)
    if recipe.style.prefix or recipe.style.suffix:
        style += (
            f" with prefix {html.escape(repr(recipe.style.prefix))} and suffix {html.escape(repr(recipe.style.suffix))}"
        )
    items = [
        f"{len(run.dataset.paths)} images in {len(run.dataset.classes)} classes",
        "models: "
        + ", ".join(
            f"{html.escape(m)} ({html.escape(run.metrics[m]['descriptors'].get('precision', 'fp32'))})"
            for m in run.evaluations
        ),
        f"methods: descriptors (class score = mean descriptor score; prompt style {style}), "
        f"baseline (template {html.escape(repr(recipe.template))}), "
        f"waffle (WaffleCLIP's control: {recipe.waffle_pairs} pairs of random words and random characters, "
        f"the same for every class{reps})",
        "every prompt the text encoder read is listed in prompts.csv",
    ]
    renamed = {name: label for name, label in run.labels.items() if label != name}
    if renamed:
        shown = ", ".join(f"{html.escape(n)} &rarr; {html.escape(label)}" for n, label in list(renamed.items())[:10])
        items.append(
            f"{len(renamed)} dataset classes are written in prompts by their descriptor key or readable name: {shown}"
            + (" ..." if len(renamed) > 10 else "")
        )
    if run.missing:
        shown = ", ".join(html.escape(name) for name in run.missing[:30]) + (" ..." if len(run.missing) > 30 else "")
        items.append(f"{len(run.missing)} classes had no descriptors and were scored with the template: {shown}")
    if run.unreadable:
        shown = "; ".join(html.escape(reason) for reason in list(run.unreadable.values())[:10])
        items.append(f"{len(run.unreadable)} images could not be read and were left out: {shown}")
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _metrics_table(run: EvaluationRun) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("model", "method", *SUMMARY_METRICS))
    rows = []
    for model, methods in run.metrics.items():
        for method in METHODS:
            values = "".join(f'<td class="num">{_number(methods[method], key)}</td>' for key in SUMMARY_METRICS)
            rows.append(f"<tr><td>{html.escape(model)}</td><td>{method}</td>{values}</tr>")
    note = ""
    if any(math.isnan(m["descriptors"]["acc5"]) for m in run.metrics.values()):
        note = '<p class="note">acc5 is not reported (n/a) with fewer than five classes, as in CLIP_benchmark.</p>'
    if run.recipe.waffle_reps > 1:
        note += (
            f'<p class="note">waffle: mean &plusmn; population standard deviation over {run.recipe.waffle_reps} seeds; '
            "each seed's metrics are in metrics.json under waffle_reps.</p>"
        )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"


def _selective_table(run: EvaluationRun) -> str:
    """Per model and method: which probabilities, AURC by probability and by margin, the coverage at 90% and
    95% selective accuracy, and which ranking is better on this data."""
    header = "".join(
        f"<th>{name}</th>"
        for name in (
            "model", "method", "probabilities", "AURC (probability)", "AURC (margin)",
            "coverage at 90%", "coverage at 95%", "better ranking",
        )
    )  # fmt: skip
    rows = []
    for model, methods in run.metrics.items():
        for method in METHODS:
            m = methods[method]
            chosen = m["selective"]["better_ranking"]
            best = m["selective"][f"by_{chosen}"]
            rule = m["probabilities"]
            kind = rule["probabilities"] + (f", calibrated (T={rule['temperature']:.3g})" if rule["calibrated"] else "")
            cells = [
                kind,
                f"{m['selective']['by_probability']['aurc']:.4f}",
                f"{m['selective']['by_margin']['aurc']:.4f}",
                f"{best['coverage_at_90']:.1%}",
                f"{best['coverage_at_95']:.1%}",
                chosen,
            ]
            values = "".join(f'<td class="num">{html.escape(c)}</td>' for c in cells)
            rows.append(f"<tr><td>{html.escape(model)}</td><td>{method}</td>{values}</tr>")
    note = (
        '<p class="note">AURC: the mean error of the most confident k images over every k (lower is better). '
        "Coverage at 90%: the largest share of images, most confident first, labelled at least 90% right, "
        "ranked by the better of probability and margin. Labels below a chosen probability or margin can be "
        "withheld: <code>label --min-probability</code>, <code>--min-margin</code>.</p>"
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"


def reliability_figure(curves: dict[str, list[dict]], kind: str) -> go.Figure:
    """Accuracy against mean confidence per bin, one line per curve, with the diagonal of perfect calibration."""
    figure = go.Figure()
    figure.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line=dict(dash="dot", color="#9aa5b1")
    )
    for name, bins in curves.items():
        figure.add_scatter(
            x=[b["confidence"] for b in bins],
            y=[b["accuracy"] for b in bins],
            mode="lines+markers",
            name=name,
            customdata=[b["count"] for b in bins],
            hovertemplate="confidence %{x:.1%}<br>accuracy %{y:.1%}<br>%{customdata} images<extra></extra>",
        )
    figure.update_layout(
        title=f"Reliability ({kind} probability of the top class)",
        template="plotly_white",
        xaxis=dict(title="mean confidence in the bin", range=[0, 1], tickformat=".0%"),
        yaxis=dict(title="accuracy in the bin", range=[0, 1], tickformat=".0%"),
        height=420,
    )
    return figure


def _risk_coverage_figure(metrics: dict) -> go.Figure:
    figure = go.Figure()
    for method in METHODS:
        for ranking in ("probability", "margin"):
            curve = metrics[method]["selective"][f"by_{ranking}"]
            figure.add_scatter(
                x=curve["coverage"],
                y=curve["accuracy"],
                mode="lines",
                name=f"{method}, by {ranking}",
                line=dict(dash="solid" if ranking == "probability" else "dash"),
                hovertemplate="most confident %{x:.0%}<br>accuracy %{y:.1%}<extra></extra>",
            )
    figure.update_layout(
        title="Selective accuracy: the most confident share of images, and how many are right",
        template="plotly_white",
        xaxis=dict(title="coverage (most confident first)", range=[0, 1], tickformat=".0%"),
        yaxis=dict(title="accuracy", tickformat=".0%"),
        height=420,
    )
    return figure


def _number(metrics: dict, key: str) -> str:
    value = metrics[key]
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    spread = metrics.get("std", {}).get(key)
    if spread is not None and len(metrics.get("seeds", [])) > 1 and not math.isnan(spread):
        return f"{value:.4f} &plusmn; {spread:.4f}"
    return f"{value:.4f}"


def _confusion_figure(metrics: dict, classes: list[str], model: str) -> go.Figure:
    labels = [safe(name, None) for name in classes]
    figure = go.Figure(
        go.Heatmap(
            z=metrics["confusion_matrix"],
            x=labels,
            y=labels,
            colorscale="Blues",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
        )
    )
    size = min(900, 260 + 18 * len(classes))
    figure.update_layout(
        title=f"Confusion matrix, descriptors ({safe(model, None)})",
        template="plotly_white",
        height=size,
        xaxis=dict(title="predicted", tickangle=-45),
        yaxis=dict(title="true", autorange="reversed"),
    )
    return figure


def _recall_figure(metrics: dict, classes: list[str]) -> go.Figure:
    figure = go.Figure()
    labels = [safe(name, None) for name in classes]
    for method in METHODS:
        figure.add_bar(x=labels, y=[metrics[method]["per_class"][name]["recall"] for name in classes], name=method)
    figure.update_layout(
        title="Per-class recall",
        barmode="group",
        template="plotly_white",
        yaxis=dict(range=[0, 1], tickformat=".0%"),
        xaxis=dict(tickangle=-45),
        height=420,
    )
    return figure


def _diagnostics_html(rows: list[dict], limit: int = 15) -> str:
    if not rows:
        return '<p class="note">No descriptors to diagnose.</p>'
    helpful = sorted((r for r in rows if r["ablation_delta"] < 0), key=lambda r: r["ablation_delta"])[:limit]
    harmful = sorted((r for r in rows if r["ablation_delta"] > 0), key=lambda r: r["ablation_delta"], reverse=True)[
        :limit
    ]
    most_used = sorted(rows, key=lambda r: r["top_in_correct"], reverse=True)[:limit]

    def table(selected: list[dict]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(r['class'])}</td><td>{html.escape(r['descriptor'])}</td>"
            f'<td class="num">{r["ablation_delta"]:+.4f}</td>'
            f'<td class="num">{r["top_in_correct"]} / {r["correct_predictions"]}</td></tr>'
            for r in selected
        )
        return (
            "<table><thead><tr><th>class</th><th>descriptor</th><th>accuracy change if removed</th>"
            f"<th>top descriptor of correct predictions</th></tr></thead><tbody>{body}</tbody></table>"
        )

    none = '<p class="note">No descriptor changes top-1 accuracy when removed on its own.</p>'
    return (
        "<h3>Descriptors that help most (removing one alone costs accuracy)</h3>"
        + (table(helpful) if helpful else none)
        + "<h3>Descriptors that hurt most (removing one alone gains accuracy)</h3>"
        + (table(harmful) if harmful else none)
        + "<h3>Descriptors most often the top match of a correct prediction</h3>"
        + table(most_used)
    )


def _views_html(run: EvaluationRun) -> str:
    predicted = {m: e.methods["descriptors"].logits.argmax(axis=1) for m, e in run.evaluations.items()}
    parts = []
    for name, indices in run.views.items():
        parts.append(f"<h3>{html.escape(name)} ({len(indices)})</h3>")
        if not indices:
            parts.append('<p class="note">none</p>')
            continue
        thumbs = []
        for i in indices[:THUMBNAILS_PER_VIEW]:
            guesses = ", ".join(
                f"{html.escape(m)}: {html.escape(run.dataset.classes[p[i]])}" for m, p in predicted.items()
            )
            thumbs.append(
                f'<figure><img alt="{html.escape(run.dataset.paths[i].name, quote=True)}" '
                f'src="{_thumbnail(run.dataset.paths[i])}">'
                f"<figcaption>true: {html.escape(run.dataset.labels[i])}<br>{guesses}</figcaption></figure>"
            )
        more = (
            f'<p class="note">and {len(indices) - THUMBNAILS_PER_VIEW} more in views.json</p>'
            if len(indices) > THUMBNAILS_PER_VIEW
            else ""
        )
        parts.append(f'<div class="thumbs">{"".join(thumbs)}</div>{more}')
    return "\n".join(parts)


def _thumbnail(path: Path) -> str:
    image = open_image(path)
    image.thumbnail((THUMBNAIL_SIZE * 2, THUMBNAIL_SIZE * 2))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(value):
    """JSON has no NaN: metrics that cannot be computed (no samples) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
