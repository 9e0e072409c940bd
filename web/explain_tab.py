"""Tab: explain an image. Upload or pick an image, name the classes, and see which features decided it.

The left column holds what the visitor gives (the image, the classes, the
model, the descriptor editor, the examples); the right column what the
app answers (the headline, the charts, heatmaps, what tells the top two
apart, model comparison). This module lays the rooms out and wires the
tab's own events; each room builds and wires its own part.
"""

from __future__ import annotations

import gradio as gr

from web import compare, editor, heatmaps, scoring, sharing, tell_apart
from web.context import QUIET
from web.examples import EXAMPLES, FIRST_EXAMPLE, example_classes
from web.messages import note

TITLE = "Explain an image"
ROOMS = (editor, heatmaps, tell_apart, compare, sharing)  # each wires its own events, once the whole page is built


def build(ctx) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            _inputs(ctx)
        with gr.Column(scale=6, min_width=320):
            _results(ctx)


def _inputs(ctx) -> None:
    ui = ctx.ui
    startup = ""
    if ctx.load_error:
        advice = f"The model could not be loaded. {ctx.load_error} Start the app with `python app.py --model DIR`."
        startup = note("error", advice)
    ui.message = gr.HTML(startup, elem_id="descry-message")
    ui.image = gr.Image(
        str(FIRST_EXAMPLE),
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard", "webcam"],
        label="Image",
        height=260,
    )
    ui.classes = gr.Textbox(
        example_classes(FIRST_EXAMPLE), label="Classes", info="Comma-separated. Press Enter to re-score."
    )
    names = ctx.models.names
    ui.model = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1)
    with gr.Group():
        editor.build(ctx)
        with gr.Row():
            editor.build_file_buttons(ctx)
            sharing.build_button(ctx)
    sharing.build_link_box(ctx)
    ui.examples = gr.Examples(
        [[str(p), example_classes(p)] for p in EXAMPLES],
        inputs=[ui.image, ui.classes],
        label="Examples, each with its classes",
        examples_per_page=6,
    )


def _results(ctx) -> None:
    ui = ctx.ui
    ui.headline = gr.HTML(elem_id="descry-headline")
    ui.descriptor_plot = gr.Plot(label="Descriptors of the top classes", show_label=False, elem_id="descriptor-plot")
    heatmaps.build(ctx)
    ui.contrast_plot = gr.Plot(label="Top class against the runner-up", show_label=False, elem_id="contrast-plot")
    tell_apart.build(ctx)
    ui.ranking_plot = gr.Plot(label="Class ranking", show_label=False, elem_id="ranking-plot")
    compare.build(ctx)
    with gr.Accordion("Result as JSON", open=False):
        ui.result = gr.JSON(label="Result")


def wire(ctx) -> None:
    scoring.prepare(ctx)
    ui = ctx.ui
    # A new image (uploaded, pasted, an example, or restored from a link) is scored without touching the message.
    # A visitor's own upload is a new action, so it is also scored as one: its message replaces the last one.
    # Both give the same message whatever their order: an error if there is one, else the last one or none.
    ctx.after_change(ui.image.change)
    ui.image.input(**ctx.events.score_fresh)
    ui.examples.dataset.click(lambda: "", None, ui.message, **QUIET)  # picking an example is a new action too
    ui.model.change(**ctx.events.score_fresh)
    for room in ROOMS:
        room.wire(ctx)
