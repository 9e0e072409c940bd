"""Room: compare models on this image. The same image and descriptors under each chosen model, side by side.

Each model gets its headline and top five, and one chart shows the ten
descriptors the models disagree on most, each score taken relative to that
model's own mean descriptor score for the image (models differ in scale).
Shown only when the app has two or more models.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from descriptors.limits import RequestLimits
from explain import ExplainerPool, open_image
from explain.charts import model_comparison_figure
from web.messages import USER_ERRORS, headline_html, note, short_name
from web.scoring import chart_width, classify_on_device
from web.uploads import file_path


def compare_models(
    models: ExplainerPool,
    limits: RequestLimits,
    names: list[str],
    image,
    classes_text: str,
    descriptors: dict,
    width: int | None = None,
):
    """The same image and descriptors under several models: (comparison HTML, disagreement figure, message)."""
    chosen_models = [name for name in (names or []) if name in models.names]
    if len(chosen_models) < 2:
        return "", None, note("info", "Pick two or more models to compare.")
    path = file_path(image)
    if path is None:
        return "", None, note("info", "Upload an image, paste one, or pick an example first.")
    try:
        chosen = limits.choose(classes_text, descriptors)
        picture = open_image(path, "The image")
        results = {
            name: classify_on_device(models.get(name), picture, chosen, Path(path).name) for name in chosen_models
        }
    except USER_ERRORS as error:
        return "", None, note("error", f"Could not compare: {error}")
    blocks = []
    for name, result in results.items():
        ranking = "".join(
            f"<li>{html.escape(entry.name)} {entry.probability:.1%}</li>" for entry in result.predictions[:5]
        )
        blocks.append(
            f'<div class="descry-model"><div class="descry-model-name">{html.escape(short_name(name))}</div>'
            f"{headline_html(result)}<ol>{ranking}</ol></div>"
        )
    labels = {name: short_name(name) for name in results}
    figure = model_comparison_figure(results, labels=labels, width=width)
    return f'<div class="descry-compare">{"".join(blocks)}</div>', figure, ""


def build(ctx) -> None:
    names = ctx.models.names
    with gr.Accordion("Compare models on this image", open=False, visible=len(names) > 1):
        ctx.ui.compare_models = gr.CheckboxGroup([(short_name(n), n) for n in names], value=names, label="Models")
        ctx.ui.compare_button = gr.Button("Compare", size="sm")
        ctx.ui.comparison = gr.HTML(elem_id="descry-comparison")
        ctx.ui.comparison_plot = gr.Plot(show_label=False, elem_id="comparison-plot", visible=False)


def wire(ctx) -> None:
    ui = ctx.ui

    def compare(names, image_value, classes_text, descriptors, width):
        return compare_models(ctx.models, ctx.limits, names, image_value, classes_text, descriptors, chart_width(width))

    ui.compare_button.click(
        compare,
        [ui.compare_models, ui.image, ui.classes, ui.descriptor_set, ui.plot_width],
        [ui.comparison, ui.comparison_plot, ui.message],
        preprocess=False,
        api_visibility="private",
    )
