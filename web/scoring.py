"""Scoring the image for the page: the explanation a person sees, and the events that refresh it.

`explain_image` is the one handler that turns the page's inputs (image,
classes, the session's descriptors, the model, the class being edited, the
width the charts will have) into a `Shown`: the headline, the three charts,
the result record and a message. `updates` turns a `Shown` into what the
page's components receive, sending nothing that did not change: after an
error the last good explanation stays, marked as stale, and with no image
the charts are hidden rather than left describing another picture.
`prepare` defines the shared events every room chains to: scoring as a new
action (its message replaces the last one), scoring as a follow-on (the
message of the action that caused it stays), and remembering the session
in the browser.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from descriptors.limits import RequestLimits
from descriptors.validate import EMPTY, check_descriptors
from explain import Classification, Explainer, ExplainerPool, ModelLoadError, open_image
from explain.charts import contrast_figure, descriptor_figure, ranking_figure
from explain.confidence import Abstention, Decision
from explain.engine import LONG_ENCODE
from web.context import QUIET
from web.examples import example_name
from web.heatmaps import heatmap_choices, kept_choice
from web.messages import USER_ERRORS, headline_html, note, setup_panel
from web.settings import Settings
from web.uploads import download_file, file_path

try:  # On a Hugging Face ZeroGPU Space, GPU work must run inside spaces.GPU; elsewhere this is a no-op.
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(function):
        return function


NO_IMAGE = "Upload an image, paste one, or pick an example to see the explanation."
STALE = (
    "The charts below still show the last explanation that worked: the change that caused the message above "
    "has not been scored."
)


@on_gpu
def classify_on_device(explainer: Explainer, picture, descriptors: dict, name: str = "image", on_encode=None):
    return explainer.classify(picture, descriptors, name=name, on_encode=on_encode)


@dataclass
class Shown:
    """What one scoring puts on the page. `state` is "ok", "empty" (no image to explain) or "error"."""

    state: str
    message: str = ""
    headline: str = ""
    ranking: go.Figure | None = None
    descriptors: go.Figure | None = None
    contrast: go.Figure | None = None
    record: dict | None = None


def explain_image(
    models: ExplainerPool,
    limits: RequestLimits,
    model_name: str | None,
    image,
    classes_text: str,
    descriptors: dict,
    on_encode=None,
    editing: str | None = None,
    width: int | None = None,
    decision: Decision | None = None,
) -> Shown:
    """Score the image and draw what explains it; `editing` is the class in the editor, which the charts
    always include, and `width` the charts' width in pixels, which their labels wrap to."""
    path = file_path(image)
    if path is None:
        return Shown("empty", note("info", NO_IMAGE))
    try:
        chosen = limits.choose(classes_text, descriptors)
        explainer = models.get(model_name)
        picture = open_image(path, "The image")
        started, before = time.perf_counter(), explainer.texts_encoded
        result = classify_on_device(explainer, picture, chosen, Path(path).name, on_encode)
        elapsed = (time.perf_counter() - started) * 1000
    except ModelLoadError as error:
        return Shown("error", "", setup_panel(str(error)))
    except USER_ERRORS as error:
        return Shown("error", note("error", f"Could not explain: {error}"))
    summary = (
        f"{Path(path).name}: scored {len(chosen)} classes in {elapsed:.0f} ms; "
        f"{explainer.texts_encoded - before} new prompts encoded."
    )
    contrast = None
    if len(result.predictions) > 1:
        contrast = contrast_figure(result.contrast(), width=width)
    ranked = result.predictions
    decided = (decision or Decision())(
        explainer.rule, [e.name for e in ranked], [e.score for e in ranked], [e.probability for e in ranked]
    )
    return Shown(
        "ok",
        headline=headline_html(result, summary, _warnings(result, chosen), decided["abstain_reason"]),
        ranking=ranking_figure(result, include=editing, width=width),
        descriptors=descriptor_figure(result, include=editing, width=width),
        contrast=contrast,
        record={**result.to_dict(contrast=True), **decided},
    )


def _warnings(result: Classification, chosen: dict) -> list[str]:
    """What the visitor should know about the set: template fallbacks and the first descriptor problem."""
    warnings = []
    if result.fallback_classes:
        warnings.append("No descriptors, scored with the template: " + ", ".join(result.fallback_classes) + ".")
    problems = [p for p in check_descriptors(chosen) if p.kind != EMPTY]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        warnings.append(f"Descriptor warning: {problems[0]}{more}")
    return warnings


def updates(shown: Shown, previous: dict | None, picked: str | None, keep_message: bool = False) -> tuple:
    """What the scoring's components receive, in `prepare`'s order of outputs.

    A chart that is absent is hidden; after an error everything shown stays (stale) and only the
    message and the stale mark change; the heatmap picker is left alone when its choices did not change.
    """
    message = gr.skip() if keep_message and not shown.message else shown.message
    if shown.state == "error":
        stale = _stale() if previous else ""
        headline = shown.headline or gr.skip()
        hidden = gr.update(visible=False) if shown.headline else gr.skip()  # the setup panel stands alone
        return hidden, hidden, hidden, headline, gr.skip(), stale, message, gr.skip()
    charts = [gr.update(value=figure, visible=figure is not None) for figure in (shown.ranking, shown.descriptors)]
    # The contrast chart depends on the top two classes alone: when they are as they were, nothing is sent.
    same_pair = shown.contrast is not None and previous and previous.get("contrast") == shown.record.get("contrast")
    charts.append(gr.skip() if same_pair else gr.update(value=shown.contrast, visible=shown.contrast is not None))
    choices = heatmap_choices(shown.record)
    picker = (
        gr.skip()
        if choices == heatmap_choices(previous)
        else gr.update(choices=choices, value=kept_choice(choices, picked))
    )
    return *charts, shown.headline, shown.record, "", message, picker


def _stale() -> str:
    return f'<div class="descry-stale">{html.escape(STALE)}</div>'


def progress_for(progress) -> Callable[[int], Callable[[int], None] | None]:
    """An `on_encode` that shows long encodes in Gradio's progress display, saying up front how many prompts."""

    def start(total: int):
        if progress is None or total < LONG_ENCODE:
            return None
        done = [0]
        progress((0, total), desc=f"Encoding {total:,} new prompts (cached for next time)")

        def step(count: int) -> None:
            done[0] += count
            progress((done[0], total), desc=f"Encoding {total:,} new prompts (cached for next time)")

        return step

    return start


def remember(settings: Settings, descriptors: dict, classes_text: str, image) -> tuple[dict, str]:
    """What the browser keeps of the session (the classes, their descriptors, and the example shown, if the
    image is one), and the download button's file of the set."""
    kept = {"classes": classes_text, "descriptors": descriptors, "example": example_name(file_path(image))}
    return kept, download_file(settings, descriptors)


def outputs(ctx) -> list:
    """The components a scoring updates, in the order `updates` returns them."""
    ui = ctx.ui
    return [
        ui.ranking_plot,
        ui.descriptor_plot,
        ui.contrast_plot,
        ui.headline,
        ui.record,
        ui.stale,
        ui.message,
        ui.heatmap_picker,
    ]


def inputs(ctx) -> list:
    """What a scoring reads, in the order `score` takes them."""
    ui = ctx.ui
    return [ui.model, ui.image, ui.classes, ui.descriptor_set, ui.editing, ui.plot_width, ui.record, ui.heatmap_picker]


def prepare(ctx) -> None:
    """Define the shared events: `score_fresh`, `score_follow` and `remember` (see the module's docstring)."""
    ui = ctx.ui

    def score(model_name, image_value, classes_text, descriptors, editing, width, previous, picked):
        shown = explain_for(ctx, model_name, image_value, classes_text, descriptors, editing, width)
        return updates(shown, previous, picked)

    def score_after(
        model_name, image_value, classes_text, descriptors, editing, width, previous, picked, progress=gr.Progress()
    ):
        # A large new set (an upload, a reset, an LLM's answers) shows its encoding progress over the message area.
        encode = progress_for(progress)
        shown = explain_for(ctx, model_name, image_value, classes_text, descriptors, editing, width, encode)
        return updates(shown, previous, picked, keep_message=True)

    def keep(descriptors, classes_text, image_value):
        return remember(ctx.settings, descriptors, classes_text, image_value)

    # The image goes in unprocessed (a path), so that a file that is no image becomes a message, not a crash.
    common = dict(inputs=inputs(ctx), outputs=outputs(ctx), preprocess=False)
    ctx.events.score_fresh = dict(fn=score, **common, **QUIET)
    ctx.events.score_follow = dict(
        fn=score_after, **common, api_visibility="private", show_progress="minimal", show_progress_on=[ui.message]
    )
    ctx.events.remember = dict(
        fn=keep,
        inputs=[ui.descriptor_set, ui.classes, ui.image],
        outputs=[ui.remembered, ui.download_button],
        preprocess=False,
        **QUIET,
    )


def explain_for(ctx, model_name, image, classes_text, descriptors, editing, width, on_encode=None) -> Shown:
    """`explain_image` with the app's models and limits, for the page's own inputs."""
    settings = ctx.settings
    decision = Decision(Abstention(settings.min_probability, settings.min_margin))
    return explain_image(
        ctx.models, ctx.limits, model_name, image, classes_text, descriptors, on_encode, editing, chart_width(width),
        decision,
    )  # fmt: skip


def chart_width(width) -> int | None:
    """The charts' width the browser reported, or None before it has."""
    return int(width) if isinstance(width, int | float) and width > 100 else None
