"""Room: where in the image does a descriptor match? A heatmap per descriptor, over the photo.

The picker offers the descriptors of the top two classes; the chosen one's
heatmap is drawn over the image with its scale and a caption saying what
the colours mean. "The descriptor alone" maps the descriptor without the
class name in its prompt. The heatmaps come from `Explainer.heatmaps`,
whose patch embeddings are cached, so switching descriptors costs no image
forward. The API's /heatmap uses `heatmaps_for` too.
"""

from __future__ import annotations

from dataclasses import replace

import gradio as gr
from PIL import Image

from descriptors.limits import RequestLimits
from explain import ExplainerPool, ExplainError, Heatmaps, open_image
from explain.faithfulness import SEEDS, STEPS
from explain.heatmap_drawing import draw_heatmap, scale_ends
from web.messages import USER_ERRORS
from web.uploads import file_path

SEPARATOR = " · "  # between the class and the descriptor in the picker
FORWARDS = 2 * (STEPS + 1) * (1 + SEEDS)  # image passes of one map's faithfulness test


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
    faithful_to: str | None = None,
) -> Heatmaps:
    """The heatmaps of one class's descriptors on an opened image, within the request limits; with
    `faithful_to` (one of the class's descriptors), that map also carries its deletion and insertion test
    (`explain.faithfulness`: 72 image forwards, so for the one map asked for only)."""
    chosen = limits.choose(classes_text, descriptors)
    explainer = models.get(model_name)
    heatmaps = explainer.heatmaps(picture, chosen, [class_name], alone=alone, name=name)
    asked = [entry for entry in heatmaps.entries if entry.descriptor == faithful_to]
    if not asked:
        return heatmaps
    checked = explainer.with_faithfulness(picture, replace(heatmaps, entries=tuple(asked[:1])))
    entries = tuple(checked.entries[0] if entry.descriptor == faithful_to else entry for entry in heatmaps.entries)
    return replace(heatmaps, entries=entries)


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
    faithfulness: bool = False,
):
    """The chosen descriptor's heatmap over the image: (picture or None, caption).

    The colours span the lowest to the highest score of all of the class's descriptors, so that heatmaps
    compare; with `own_scale` they span this heatmap's own range, so that a descriptor whose scores vary
    little still shows where it is highest. The caption says which, what the numbers are, the method and
    the family it was chosen for, and with `faithfulness` how the map fares against random orders.
    """
    path = file_path(image)
    if not path or not choice or SEPARATOR not in choice:
        return None, "Pick a descriptor to see where in the image it matches."
    class_name, descriptor = choice.split(SEPARATOR, 1)
    try:
        picture = open_image(path, "The image")
        checked = descriptor if faithfulness else None
        heatmaps = heatmaps_for(
            models, limits, model_name, picture, "The image", classes_text, descriptors, class_name, alone, checked
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
    ends = scale_ends(low, high)
    bar = heatmaps.bar_units
    what = "its score at each" if bar else "each location's share of its score, at each"
    units = "in the same units as its bar" if bar else f"units: {heatmaps.units}"
    caption = (
        f"Where “{descriptor}” matches for {class_name}: {what} of {height}×{width} locations, "
        f"from {ends[0]} (dark blue) to {ends[1]} (yellow), {units}; colours on {scale}. "
        f"Prompt: “{entry.prompt}”. "
        + (
            "The grid covers the whole image. "
            if tuple(heatmaps.region) == (0, 0, picture.width, picture.height)
            else "Greyed: outside the centre square the model saw. "
        )
        + f"Method: {heatmaps.method}, chosen for this {heatmaps.family} tower. "
        + faithfulness_words(entry.faithfulness)
    )
    return draw_heatmap(picture, entry.grid, low, high, heatmaps.region), caption.strip()


def faithfulness_words(found: dict | None) -> str:
    """The caption's sentence on a map's deletion and insertion test, or nothing when it was not run."""
    if not found:
        return ""
    deletion, insertion = found.get("deletion_ratio"), found.get("insertion_ratio")
    if deletion is None or insertion is None:
        return (
            "Faithfulness: not measurable here: covering the image in random orders barely moves the score "
            f"({found['seconds']:.1f} s)."
        )
    verdict = (
        "the map found what drives the score"
        if deletion < 1 < insertion
        else "the map did no better than random orders"
        if deletion >= 1 and insertion <= 1
        else "mixed"
    )
    return (
        f"Faithfulness: deletion ratio {deletion:.2f} (below 1: covering the map's highest locations first lowers "
        f"the score faster than random orders), insertion ratio {insertion:.2f} (above 1: uncovering them first "
        f"raises it faster); {verdict}. {found['steps']} steps against {found['seeds']} random orders, "
        f"{found['seconds']:.1f} s."
    )


def build(ctx) -> None:
    """The accordion: a descriptor picker, the two switches, the heatmap and its caption."""
    with gr.Accordion("Where in the image does a descriptor match?", open=False, elem_id="descry-heatmap"):
        ctx.ui.heatmap_picker = gr.Dropdown([], label="Descriptor")
        with gr.Row():
            ctx.ui.heatmap_alone = gr.Checkbox(False, label="descriptor alone (no class name)", min_width=160)
            ctx.ui.heatmap_own = gr.Checkbox(False, label="its own colour range", min_width=160)
            ctx.ui.heatmap_faithful = gr.Checkbox(
                False, label=f"test how faithful ({FORWARDS} image passes)", min_width=160, elem_id="descry-faithful"
            )
        ctx.ui.heatmap_image = gr.Image(label="Heatmap", interactive=False, height=320, elem_id="descry-heatmap-image")
        ctx.ui.heatmap_caption = gr.Markdown(elem_id="descry-heatmap-caption")


def wire(ctx) -> None:
    ui = ctx.ui

    def show(model_name, image_value, classes_text, descriptors, choice, alone, own, faithful):
        return descriptor_heatmap(
            ctx.models, ctx.limits, model_name, image_value, classes_text, descriptors, choice, alone, own, faithful
        )

    switches = [ui.heatmap_picker, ui.heatmap_alone, ui.heatmap_own, ui.heatmap_faithful]
    for event in (switch.change for switch in switches):
        event(
            show,
            [ui.model, ui.image, ui.classes, ui.descriptor_set, *switches],
            [ui.heatmap_image, ui.heatmap_caption],
            preprocess=False,
            api_visibility="private",
            trigger_mode="always_last",
        )
