"""Room: where in the image does a descriptor match? A heatmap per descriptor, over the photo.

The picker offers the descriptors of the top two classes; the chosen one's
heatmap is drawn over the image with its scale and a caption saying what
the colours mean. "The descriptor alone" maps the descriptor without the
class name in its prompt. The heatmaps come from `Explainer.heatmaps`,
whose patch embeddings are cached, so switching descriptors costs no image
forward. The API's /heatmap uses `heatmaps_for` too.
"""

from __future__ import annotations

import gradio as gr
from PIL import Image

from descriptors.limits import RequestLimits
from explain import ExplainerPool, ExplainError, Heatmaps, open_image
from explain.heatmap_drawing import draw_heatmap
from web.messages import USER_ERRORS
from web.uploads import file_path

SEPARATOR = " · "  # between the class and the descriptor in the picker


def heatmap_choices(record: dict | None) -> list[str]:
    """The descriptors of the top two classes of a result, as the picker offers them."""
    if not record or not record.get("predictions"):
        return []
    return [
        f"{p['class']}{SEPARATOR}{d['descriptor']}"
        for p in record["predictions"][:2]
        if not p.get("fallback")
        for d in p["descriptors"]
    ]


def kept_choice(choices: list[str], current: str | None) -> str | None:
    """The picker's value after its choices changed: the current one if still offered, else the first."""
    return current if current in choices else (choices[0] if choices else None)


def heatmaps_for(
    models: ExplainerPool,
    limits: RequestLimits,
    model_name: str | None,
    picture: Image.Image,
    name: str,
    classes_text: str,
    descriptors: dict,
    class_name: str,
    alone: bool = False,
) -> Heatmaps:
    """The heatmaps of one class's descriptors on an opened image, within the request limits."""
    chosen = limits.choose(classes_text, descriptors)
    return models.get(model_name).heatmaps(picture, chosen, [class_name], alone=alone, name=name)


def descriptor_heatmap(
    models: ExplainerPool,
    limits: RequestLimits,
    model_name: str | None,
    image,
    classes_text: str,
    descriptors: dict,
    choice: str | None,
    alone: bool = False,
    own_scale: bool = False,
):
    """The chosen descriptor's heatmap over the image: (picture or None, caption).

    The colours span the lowest to the highest score of all of the class's descriptors, so that heatmaps
    compare; with `own_scale` they span this heatmap's own range, so that a descriptor whose scores vary
    little still shows where it is highest. The caption says which.
    """
    path = file_path(image)
    if not path or not choice or SEPARATOR not in choice:
        return None, "Pick a descriptor to see where in the image it matches."
    class_name, descriptor = choice.split(SEPARATOR, 1)
    try:
        picture = open_image(path, "The image")
        heatmaps = heatmaps_for(
            models, limits, model_name, picture, "The image", classes_text, descriptors, class_name, alone
        )
    except USER_ERRORS as error:
        return None, f"No heatmap: {error}"
    try:
        entry = heatmaps.find(class_name, descriptor)
    except ExplainError:
        return None, "That descriptor is no longer in the list; pick another."
    low, high = (float(entry.grid.min()), float(entry.grid.max())) if own_scale else heatmaps.scale(class_name)
    scale = "this heatmap's own range" if own_scale else f"one scale for all of {class_name}'s descriptors"
    height, width = entry.grid.shape
    caption = (
        f"Where “{descriptor}” matches for {class_name}: its score at each of {height}×{width} locations, "
        f"from {low:.2f} (dark blue) to {high:.2f} (yellow), in the same units as its bar; colours on {scale}. "
        f"Prompt: “{entry.prompt}”. "
        + (
            "The grid covers the whole image. "
            if tuple(heatmaps.region) == (0, 0, picture.width, picture.height)
            else "Greyed: outside the centre square the model saw. "
        )
        + f"Method: {heatmaps.method or 'ClearCLIP (Lan et al., ECCV 2024)'}, chosen for this {heatmaps.family} tower."
    )
    return draw_heatmap(picture, entry.grid, low, high, heatmaps.region), caption


def build(ctx) -> None:
    """The accordion: a descriptor picker, the two switches, the heatmap and its caption."""
    with gr.Accordion("Where in the image does a descriptor match?", open=False, elem_id="descry-heatmap"):
        ctx.ui.heatmap_picker = gr.Dropdown([], label="Descriptor")
        with gr.Row():
            ctx.ui.heatmap_alone = gr.Checkbox(False, label="descriptor alone (no class name)", min_width=160)
            ctx.ui.heatmap_own = gr.Checkbox(False, label="its own colour range", min_width=160)
        ctx.ui.heatmap_image = gr.Image(label="Heatmap", interactive=False, height=320, elem_id="descry-heatmap-image")
        ctx.ui.heatmap_caption = gr.Markdown(elem_id="descry-heatmap-caption")


def wire(ctx) -> None:
    ui = ctx.ui

    def show(model_name, image_value, classes_text, descriptors, choice, alone, own):
        return descriptor_heatmap(
            ctx.models, ctx.limits, model_name, image_value, classes_text, descriptors, choice, alone, own
        )

    for event in (ui.heatmap_picker.change, ui.heatmap_alone.change, ui.heatmap_own.change):
        event(
            show,
            [ui.model, ui.image, ui.classes, ui.descriptor_set, ui.heatmap_picker, ui.heatmap_alone, ui.heatmap_own],
            [ui.heatmap_image, ui.heatmap_caption],
            preprocess=False,
            api_visibility="private",
            trigger_mode="always_last",
        )
