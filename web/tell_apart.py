"""Room: what tells the top class from the runner-up? Feature pairs from the LLM, scored on the image.

The button asks the configured LLM (through the owner's gate) for pairs of
features, one of the top class and the matching one of the runner-up,
scores both sides of each pair on the image, and draws them side by side
from the same reference as the descriptor chart. "Add to descriptors"
merges the pairs into both classes' lists. Which classes are the top two
is worked out here, on the server, from the session's own set; nothing
the browser sends back is trusted for it.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from descriptors import DescriptorError
from descriptors.differential import merge_pairs
from descriptors.limits import RequestLimits
from explain import ExplainerPool, open_image
from explain.charts import pairs_figure, reference_score
from web.context import QUIET
from web.llm_gate import LLMFactory, LLMGate, NoAnswer, NoLLM, pairs_for, visitor_keys
from web.messages import USER_ERRORS, Refusal, note
from web.scoring import chart_width, classify_on_device
from web.uploads import file_path


def tell_apart(
    models: ExplainerPool,
    limits: RequestLimits,
    model_name: str | None,
    image,
    classes_text: str,
    descriptors: dict,
    llm_factory: LLMFactory,
    gate: LLMGate | None = None,
    visitor: str = "local",
    width: int | None = None,
):
    """Ask the LLM what tells the top class from the runner-up, and score those pairs on the image.

    Returns (pairs figure or None, pending {"a", "b", "pairs"} or None, message).
    """
    path = file_path(image)
    if path is None:
        return None, None, note("info", "Upload an image, paste one, or pick an example first.")
    try:
        explainer = models.get(model_name)
        picture = open_image(path, "The image")
        result = classify_on_device(explainer, picture, limits.choose(classes_text, descriptors), Path(path).name)
    except USER_ERRORS as error:
        return None, None, note("error", f"Could not explain: {error}")
    if len(result.predictions) < 2:
        return None, None, note("info", "Explain an image with at least two classes first.")
    a, b = result.predictions[0].name, result.predictions[1].name
    try:
        found, cached = pairs_for(a, b, llm_factory, gate, visitor, limits=limits)
    except (NoLLM, NoAnswer) as error:
        return None, None, note("error", str(error))
    except Refusal as error:
        return None, None, note("error", f"Could not ask: {error}")
    try:
        sides = {a: [x for x, _ in found], b: [y for _, y in found]}
        scored = classify_on_device(explainer, picture, sides, Path(path).name)
    except USER_ERRORS as error:
        return None, None, note("error", f"Could not score the pairs: {error}")
    by_text = {(entry.name, d.descriptor): d.score for entry in scored.predictions for d in entry.descriptors}
    rows = [(x, y, by_text[(a, x)], by_text[(b, y)]) for x, y in found if (a, x) in by_text and (b, y) in by_text]
    # The same reference as the descriptor chart: the mean of every descriptor score of the explanation shown.
    figure = pairs_figure(a, b, rows, reference_score(result), width)
    done = (
        f"{len(found)} pairs of features that tell {a} from {b}{' (from the cache)' if cached else ''}. "
        "Add them to both classes' descriptors to see their effect."
    )
    return figure, {"a": a, "b": b, "pairs": found}, note("done", done)


def add_pairs(descriptors: dict, pending: dict | None, limits: RequestLimits = RequestLimits()) -> tuple[dict, str]:
    """Merge the pending pairs into both classes' descriptors; returns (descriptors, message)."""
    if not pending:
        return descriptors, note("info", "Ask what tells the two classes apart first.")
    merged = merge_pairs(descriptors, pending["a"], pending["b"], pending["pairs"])
    try:
        limits.check_state(merged)
    except DescriptorError as error:
        return descriptors, note("error", f"Could not add the pairs: {error}")
    added = sum(len(v) for v in merged.values()) - sum(len(v) for v in descriptors.values())
    return merged, note("done", f"Added {added} descriptors to {pending['a']} and {pending['b']}.")


def build(ctx) -> None:
    """The button, the button that adds the pairs, and their chart (hidden until there are pairs)."""
    with gr.Row():
        ctx.ui.apart_button = gr.Button(
            "What tells the top class from the runner-up?", size="sm", elem_id="descry-apart"
        )
        ctx.ui.add_pairs_button = gr.Button("Add to descriptors", size="sm", visible=False, elem_id="descry-add-pairs")
    ctx.ui.pairs_plot = gr.Plot(show_label=False, visible=False, elem_id="pairs-plot")
    ctx.ui.pending_pairs = gr.State(None)


def wire(ctx) -> None:
    ui = ctx.ui

    def ask(model_name, image_value, classes_text, descriptors, width, request: gr.Request):
        figure, pending, text = tell_apart(
            ctx.models,
            ctx.limits,
            model_name,
            image_value,
            classes_text,
            descriptors,
            ctx.llm,
            ctx.gate,
            visitor_keys(request, ctx.settings.proxy_hops),
            chart_width(width),
        )
        shown = figure is not None
        return gr.update(value=figure, visible=shown), pending, gr.update(visible=shown), text

    ui.apart_button.click(
        ask,
        [ui.model, ui.image, ui.classes, ui.descriptor_set, ui.plot_width],
        [ui.pairs_plot, ui.pending_pairs, ui.add_pairs_button, ui.message],
        preprocess=False,
        api_visibility="private",
        show_progress_on=[ui.message],
    )

    def add(descriptors, pending):
        return add_pairs(descriptors, pending, ctx.limits)

    added = ui.add_pairs_button.click(
        add, [ui.descriptor_set, ui.pending_pairs], [ui.descriptor_set, ui.message], **QUIET
    )
    ctx.after_change(added)
