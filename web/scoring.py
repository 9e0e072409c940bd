"""Scoring the image for the page: the explanation a person sees, and the events that refresh it.

`explain_image` is the one handler that turns the page's inputs (image,
classes, the session's descriptors, the model) into the headline, the
three charts, the result record and a message. `prepare` defines the
shared events every room chains to: scoring as a new action (its message
replaces the last one), scoring as a follow-on (the message of the action
that caused it stays), and remembering the session in the browser.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from descriptors.limits import RequestLimits
from descriptors.validate import EMPTY, check_descriptors
from explain import Classification, Explainer, ExplainerPool, open_image
from explain.charts import contrast_figure, descriptor_figure, ranking_figure, reference_score
from explain.engine import LONG_ENCODE
from web.context import QUIET
from web.heatmaps import heatmap_choices, kept_choice
from web.messages import USER_ERRORS, headline_html, note
from web.settings import Settings
from web.uploads import download_file, file_path

try:  # On a Hugging Face ZeroGPU Space, GPU work must run inside spaces.GPU; elsewhere this is a no-op.
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(function):
        return function


@on_gpu
def classify_on_device(explainer: Explainer, picture, descriptors: dict, name: str = "image", on_encode=None):
    return explainer.classify(picture, descriptors, name=name, on_encode=on_encode)


def explain_image(
    models: ExplainerPool,
    limits: RequestLimits,
    model_name: str | None,
    image,
    classes_text: str,
    descriptors: dict,
    on_encode=None,
):
    """Score the image.

    Returns (ranking figure, descriptor figure, contrast figure, result dict,
    headline HTML, message HTML); the message is "" when all went well.
    """
    empty = (None, None, None, None, "")
    path = file_path(image)
    if path is None:
        return *empty, note("info", "Upload an image, paste one, or pick an example to see the explanation.")
    try:
        chosen = limits.choose(classes_text, descriptors)
        explainer = models.get(model_name)
        picture = open_image(path, "The image")
        started, before = time.perf_counter(), explainer.texts_encoded
        result = classify_on_device(explainer, picture, chosen, Path(path).name, on_encode)
        elapsed = (time.perf_counter() - started) * 1000
    except USER_ERRORS as error:
        return *empty, note("error", f"Could not explain: {error}")
    summary = (
        f"scored {len(chosen)} classes in {elapsed:.0f} ms; {explainer.texts_encoded - before} new prompts encoded."
    )
    contrast = contrast_figure(result.contrast(), reference_score(result)) if len(result.predictions) > 1 else None
    headline = headline_html(result, " ".join(_details(result, chosen, f"{Path(path).name}: {summary}")))
    return ranking_figure(result), descriptor_figure(result), contrast, result.to_dict(contrast=True), headline, ""


def _details(result: Classification, chosen: dict, summary: str) -> list[str]:
    """What the line under the headline says: timing, template fallbacks, the first descriptor warning."""
    details = [summary]
    if result.fallback_classes:
        details.append("No descriptors, scored with the template: " + ", ".join(result.fallback_classes) + ".")
    problems = [p for p in check_descriptors(chosen) if p.kind != EMPTY]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        details.append(f"Descriptor warning: {problems[0]}{more}")
    return details


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


def remember(settings: Settings, descriptors: dict, classes_text: str) -> tuple[dict, str]:
    """What the browser keeps of the session, and the download button's file of the set."""
    return {"classes": classes_text, "descriptors": descriptors}, download_file(settings, descriptors)


def picker_update(record: dict | None, current: str | None):
    """The heatmap picker after a new result: its choices, keeping the current one if it is still offered."""
    choices = heatmap_choices(record)
    return gr.update(choices=choices, value=kept_choice(choices, current))


def prepare(ctx) -> None:
    """Define the shared events: `score_fresh`, `score_follow` and `remember` (see the module's docstring)."""
    ui = ctx.ui
    charts = [ui.ranking_plot, ui.descriptor_plot, ui.contrast_plot, ui.result, ui.headline]
    inputs = [ui.model, ui.image, ui.classes, ui.descriptor_set, ui.heatmap_picker]
    outputs = [*charts, ui.message, ui.heatmap_picker]

    def score(model_name, image_value, classes_text, descriptors, current=None):
        shown = explain_image(ctx.models, ctx.limits, model_name, image_value, classes_text, descriptors)
        return *shown, picker_update(shown[3], current)

    def score_after(model_name, image_value, classes_text, descriptors, current=None, progress=gr.Progress()):
        # A large new set (an upload, a reset, an LLM's answers) shows its encoding progress over the message area.
        encode = progress_for(progress)
        *shown, problem = explain_image(
            ctx.models, ctx.limits, model_name, image_value, classes_text, descriptors, encode
        )
        return *shown, problem or gr.skip(), picker_update(shown[3], current)

    def keep(descriptors, classes_text):
        return remember(ctx.settings, descriptors, classes_text)

    # The image goes in unprocessed (a path), so that a file that is no image becomes a message, not a crash.
    ctx.events.score_fresh = dict(fn=score, inputs=inputs, outputs=outputs, preprocess=False, **QUIET)
    ctx.events.score_follow = dict(
        fn=score_after,
        inputs=inputs,
        outputs=outputs,
        preprocess=False,
        api_visibility="private",
        show_progress="minimal",
        show_progress_on=[ui.message],
    )
    ctx.events.remember = dict(
        fn=keep, inputs=[ui.descriptor_set, ui.classes], outputs=[ui.remembered, ui.download_button], **QUIET
    )
