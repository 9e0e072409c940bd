"""`explain calibrate`: fit each model's and method's temperature on an evaluation's stored class scores.

Reads the evaluation folder's scores.npz (written by `explain evaluate`),
fits temperature scaling on a random share of the labelled images for
every model and method, measures ECE and NLL before and after on the
held-out rest, and writes calibration.json (the file `--calibration` takes)
and calibration.html (reliability diagrams before and after). The fitting
itself is `confidence.calibrate`; this module only reads and writes.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from explain.confidence import Calibration, calibrate, data_digest, save_calibrations
from explain.errors import ExplainError, first_line
from explain.evaluate import METHODS
from explain.report import reliability_figure


def read_scores(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """scores.npz's description and arrays, or one line saying why they cannot be read."""
    path = folder / "scores.npz"
    if not path.is_file():
        raise ExplainError(f"{folder} holds no scores.npz: run `explain evaluate` into it first (Descry 0.3 or later)")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        return json.loads(str(arrays.pop("about"))), arrays
    except (OSError, ValueError, KeyError) as error:
        raise ExplainError(f"{path}: not an evaluation's scores ({first_line(error)})") from None


def calibrate_evaluation(
    folder: str | Path,
    models: list[str] | None = None,
    methods: tuple[str, ...] = METHODS,
    held_out: float = 0.3,
    seed: int = 0,
    out: str | Path | None = None,
) -> tuple[list[Calibration], list[Path]]:
    """Fit every (model, method) of the evaluation in `folder`; returns the entries and the files written."""
    folder = Path(folder)
    about, arrays = read_scores(folder)
    targets = arrays["targets"]
    known = [entry["name"] for entry in about["models"]]
    for name in models or []:
        if name not in known:
            raise ExplainError(f"{folder} has no scores for model {name!r}; it has {', '.join(known)}")
    digest = data_digest(about["paths"], [about["classes"][t] for t in targets])
    entries = []
    for i, model in enumerate(about["models"]):
        if models and model["name"] not in models:
            continue
        for method in methods:
            identity = {"model": model["name"], "method": method, "prompt_style": about["prompt_style"]}
            entries.append(
                calibrate(
                    arrays[f"scores_{i}_{method}"],
                    targets,
                    about["classes"],
                    model["probabilities"],
                    identity,
                    digest,
                    held_out,
                    seed,
                )  # fmt: skip
            )
    out = Path(out) if out is not None else folder / "calibration.json"
    written = [save_calibrations(out, entries, str(folder.resolve()))]
    page = out.with_suffix(".html")
    page.write_text(_page(entries), encoding="utf-8")
    return entries, [*written, page]


def _page(entries: list[Calibration]) -> str:
    parts = ["<h1>Calibration</h1>"]
    for k, entry in enumerate(entries):
        figure = reliability_figure(
            {"before": entry.reliability_before, "after": entry.reliability_after}, entry.probabilities
        )
        figure.update_layout(title=f"{entry.model}, {entry.method}: reliability on the held-out share")
        summary = (
            f"T = {entry.temperature:.4g}; fitted on {entry.n_fit} images, measured on {entry.n_held_out}; "
            f"ECE {entry.before['ece']:.4f} &rarr; {entry.after['ece']:.4f}, "
            f"NLL {entry.before['nll']:.4f} &rarr; {entry.after['nll']:.4f}"
        )
        parts.append(f"<h2>{html.escape(entry.model)} &middot; {entry.method}</h2><p>{summary}</p>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=k == 0, config={"displaylogo": False}))
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Descry calibration</title>'
        "<style>body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1000px; }</style>"
        f"</head><body>\n{body}\n</body></html>\n"
    )
