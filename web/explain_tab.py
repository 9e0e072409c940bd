"""Tab: explain an image. Upload or pick an image, name the classes, and see which features decided it.

The left column holds what the visitor gives (the image, the classes, the
model, the descriptor editor, the examples); the right column what the
app answers (the headline, the charts, heatmaps, what tells the top two
apart, model comparison). On a phone the columns become one, and the
answer (headline and charts) comes right after the image and the classes,
before the editor. This module lays the rooms out and wires the tab's own
events; each room builds and wires its own part.
"""

from __future__ import annotations

import gradio as gr

from web import compare, editor, heatmaps, scoring, sharing, tell_apart
from web.context import QUIET
from web.examples import EXAMPLES, FIRST_EXAMPLE, example_classes
from web.messages import DISMISS_JS, setup_panel

ID = "explain"
TITLE = "Explain an image"
ROOMS = (editor, heatmaps, tell_apart, compare, sharing)  # each wires its own events, once the whole page is built
# The width the charts will have, read by the browser once the page is laid out (their labels wrap to it).
WIDTH_JS = "() => (document.querySelector('#descry-results') || document.body).clientWidth"


def build(ctx) -> None:
    with gr.Row(equal_height=False, elem_id="descry-explain"):
        with gr.Column(scale=4, min_width=320, elem_id="descry-inputs"):
            _inputs(ctx)
        with gr.Column(scale=6, min_width=320, elem_id="descry-results"):
            _results(ctx)


def _inputs(ctx) -> None:
    ui = ctx.ui
    # Floats at the bottom of the window (see style.py): a message is in view whatever caused it.
    ui.message = gr.HTML("", elem_id="descry-message", js_on_load=DISMISS_JS)
    ui.image = gr.Image(
        str(FIRST_EXAMPLE),
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard", "webcam"],
        label="Image",
        height=260,
        elem_id="descry-image",
    )
    ui.classes = gr.Textbox(
        example_classes(FIRST_EXAMPLE),
        label="Classes",
        info="Comma-separated. Press Enter to re-score.",
        elem_id="descry-classes",
    )
    names = ctx.models.names
    ui.model = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1, elem_id="descry-model")
    with gr.Group(elem_id="descry-editor"):
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
        elem_id="descry-examples",
    )


def _results(ctx) -> None:
    ui = ctx.ui
    ui.plot_width = gr.Number(0, visible=False)
    ui.headline = gr.HTML(setup_panel(ctx.load_error) if ctx.load_error else "", elem_id="descry-headline")
    ui.stale = gr.HTML("", elem_id="descry-stale")
    ui.record = gr.State(None)  # the last result, kept on the server: the JSON view and the picker read it
    # Charts appear with the first explanation: never an empty box.
    ui.descriptor_plot = gr.Plot(show_label=False, elem_id="descriptor-plot", visible=False)
    heatmaps.build(ctx)
    ui.contrast_plot = gr.Plot(show_label=False, elem_id="contrast-plot", visible=False)
    tell_apart.build(ctx)
    ui.ranking_plot = gr.Plot(show_label=False, elem_id="ranking-plot", visible=False)
    compare.build(ctx)
    with gr.Accordion("Result as JSON", open=False) as ui.result_box:
        ui.result = gr.JSON(label="Result")
    ui.result_open = gr.State(False)


def wire(ctx) -> None:
    ui = ctx.ui
    ctx.page.load(None, None, ui.plot_width, js=WIDTH_JS, **QUIET)
    scoring.prepare(ctx)
    # A new image (uploaded, pasted, an example, or restored from a link) is scored without touching the message.
    # A visitor's own upload is a new action, so it is also scored as one: its message replaces the last one.
    # Both give the same message whatever their order: an error if there is one, else the last one or none.
    ctx.after_change(ui.image.change)
    ui.image.input(**ctx.events.score_fresh)
    ui.examples.dataset.click(lambda: "", None, ui.message, **QUIET)  # picking an example is a new action too
    ui.model.change(**ctx.events.score_fresh)
    # The JSON travels only while its box is open: typing with it closed never sends it.
    ui.result_box.expand(lambda record: (True, record), ui.record, [ui.result_open, ui.result], **QUIET)
    ui.result_box.collapse(lambda: False, None, ui.result_open, **QUIET)
    ui.record.change(
        lambda record, shown: record if shown else gr.skip(), [ui.record, ui.result_open], ui.result, **QUIET
    )
    for room in ROOMS:
        room.wire(ctx)
