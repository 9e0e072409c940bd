"""The app's API: /classify, /heatmap, /differential and /generate_descriptors, with their descriptions.

Each endpoint is a plain function with a docstring that Gradio shows on the
API page (`describe`), over the same handlers the page uses: the request
limits, the model pool, the LLM gate. A visitor's mistake is one line in
Gradio's error (`api_errors`); the page's own events are private.
"""

from __future__ import annotations

import inspect

import gradio as gr
from gradio import FileData

from descriptors import DescriptorError, normalise_name, parse_class_list, require_distinct
from descriptors.limits import RequestLimits
from descriptors.store import parse_descriptors, parse_json
from explain import ExplainerPool, open_image
from web.examples import shipped_descriptors
from web.heatmaps import heatmaps_for
from web.llm_gate import LLMFactory, LLMGate, generate_for, pairs_for, visitor_keys
from web.messages import api_errors
from web.scoring import classify_on_device
from web.uploads import file_path, upload_name


def _descriptor_set(descriptors: str, limits: RequestLimits) -> dict:
    """The descriptors an API call sends as JSON text, within the limits; "" is the shipped demo set."""
    if not (descriptors or "").strip():
        return shipped_descriptors()
    if len(descriptors) > limits.max_state_bytes:  # refused before it is parsed
        raise DescriptorError(
            f"descriptors of {len(descriptors):,} characters; the app takes at most {limits.max_state_bytes:,}"
        )
    data = require_distinct(parse_descriptors(parse_json(descriptors, "descriptors"), "descriptors"))
    limits.check_names(data)
    return data


def _image(image):
    path = file_path(image)
    if path is None:
        raise DescriptorError("no image was given")
    return open_image(path, "the image")


@api_errors
def api_classify(
    models: ExplainerPool, limits: RequestLimits, image, classes: str, descriptors: str = "", model: str = ""
) -> dict:
    """Classify an image; `descriptors` is a JSON object (empty: the shipped demo set)."""
    data = _descriptor_set(descriptors, limits)
    picture = _image(image)
    explainer = models.get(model or None)
    result = classify_on_device(explainer, picture, limits.choose(classes, data), upload_name(image))
    return result.to_dict(contrast=True)


@api_errors
def api_heatmap(
    models: ExplainerPool,
    limits: RequestLimits,
    image,
    classes: str,
    class_name: str,
    descriptor: str,
    descriptors: str = "",
    alone: bool = False,
    model: str = "",
    faithfulness: bool = False,
) -> dict:
    """One descriptor's heatmap, as plain numbers; with `faithfulness`, its deletion and insertion test too."""
    data = _descriptor_set(descriptors, limits)
    picture, name = _image(image), upload_name(image)
    checked = descriptor if faithfulness else None
    chosen = (classes, data, class_name, bool(alone), checked)
    heatmaps = heatmaps_for(models, limits, model or None, picture, name, *chosen)
    return heatmaps.record(heatmaps.find(class_name, descriptor))


@api_errors
def api_differential(
    class_a: str,
    class_b: str,
    llm_factory: LLMFactory,
    gate: LLMGate | None,
    visitor="local",
    token: str = "",
    limits: RequestLimits = RequestLimits(),
) -> dict:
    """Differential feature pairs for two classes."""
    a, b = (class_a or "").strip(), (class_b or "").strip()
    if not a or not b or normalise_name(a) == normalise_name(b):
        raise DescriptorError("give two different classes")
    found, cached = pairs_for(a, b, llm_factory, gate, visitor, token, limits)
    return {"pairs": found, "cached": cached}


@api_errors
def api_generate(
    classes: str,
    llm_factory: LLMFactory,
    gate: LLMGate | None,
    visitor="local",
    token: str = "",
    limits: RequestLimits = RequestLimits(),
) -> dict:
    """Descriptors for classes from the configured LLM."""
    if len(classes or "") > limits.max_classes_text:
        raise DescriptorError(
            f"the class list is {len(classes):,} characters long; the limit is {limits.max_classes_text:,}"
        )
    names = list(dict.fromkeys(parse_class_list(classes or "")))
    if not names:
        raise DescriptorError("give at least one class name")
    result, _ = generate_for(names, llm_factory, gate, visitor, token, limits)
    return {"descriptors": result.descriptors, "failures": result.failures}


class Endpoints:
    """The named endpoints, bound to one app's context; each method's docstring is its description."""

    def __init__(self, ctx):
        self.ctx = ctx

    def classify(self, image: FileData, classes: str, descriptors: str = "", model: str = "") -> dict:
        """Classify an image by description and explain the choice.

        Parameters:
            image: the image to classify (JPEG, PNG, WebP, ...), e.g. handle_file("photo.jpg").
            classes: the candidate classes, comma-separated, e.g. "tree frog, tailed frog".
            descriptors: a JSON object {"class": ["feature", ...]} for the classes; "" uses the shipped demo set.
            model: one of the app's models; "" uses the first.
        Returns:
            The record of `python -m explain classify --json`: image (the uploaded file's name), model, predictions
            (classes with score, probability and descriptor scores, best first), baseline (the template alone), and
            contrast (top class against the runner-up).
        """
        return api_classify(self.ctx.models, self.ctx.limits, image, classes, descriptors, model)

    def heatmap(
        self,
        image: FileData,
        classes: str,
        class_name: str,
        descriptor: str,
        descriptors: str = "",
        alone: bool = False,
        model: str = "",
        faithfulness: bool = False,
    ) -> dict:
        """Where in the image one descriptor matches: its score at every location (the tower's map recipe, named).

        Parameters:
            image: the image (JPEG, PNG, WebP, ...), e.g. handle_file("photo.jpg").
            classes: the candidate classes, comma-separated.
            class_name: the class whose descriptor to map.
            descriptor: the descriptor, as written in the class's list.
            descriptors: a JSON object {"class": ["feature", ...]}; "" uses the shipped demo set.
            alone: true to map the descriptor without its class name in the prompt.
            model: one of the app's models; "" uses the first.
            faithfulness: true to test the map against random orders (deletion and insertion; 72 image passes).
        Returns:
            {"grid": [[number, ...], ...] (rows top to bottom), "units": what the numbers are (most towers: the
            descriptor's score in the units of its bar; the gradient fallback: each location's share of it),
            "method" and "family": the recipe and the tower it was chosen for, "grid_size": [rows, columns],
            "prompt": the text encoded, "region": [left, top, right, bottom] of the image the grid covers,
            "input_size": null or the square size fed to the model, "faithfulness": null, or deletion_ratio
            and insertion_ratio (below 1 and above 1: the map found what drives the score), their areas, the
            random orders' areas, steps, seeds and seconds}.
        """
        ctx = self.ctx
        return api_heatmap(
            ctx.models, ctx.limits, image, classes, class_name, descriptor, descriptors, alone, model, faithfulness
        )

    def differential(self, class_a: str, class_b: str, token: str = "", request: gr.Request = None) -> dict:
        """Ask the app's LLM what visual features tell one class from another, as pairs.

        Parameters:
            class_a: the first class, e.g. "tree frog".
            class_b: the class it is confused with, e.g. "tailed frog".
            token: the owner's token, when the app was started with DESCRY_LLM_TOKEN; otherwise "".
        Returns:
            {"pairs": [[feature of class_a, matching feature of class_b], ...], "cached": true when the answer
            came from the cache}.
        """
        visitor = visitor_keys(request, self.ctx.settings.proxy_hops)
        return api_differential(class_a, class_b, self.ctx.llm, self.ctx.gate, visitor, token, self.ctx.limits)

    def generate_descriptors(self, classes: str, token: str = "", request: gr.Request = None) -> dict:
        """Ask the app's LLM for the visual features of each class.

        Parameters:
            classes: the classes, comma-separated (at most 20 per request).
            token: the owner's token, when the app was started with DESCRY_LLM_TOKEN; otherwise "".
        Returns:
            {"descriptors": {"class": ["feature", ...]}, "failures": {"class": "why it failed"}}.
        """
        visitor = visitor_keys(request, self.ctx.settings.proxy_hops)
        return api_generate(classes, self.ctx.llm, self.ctx.gate, visitor, token, self.ctx.limits)


ENDPOINTS = ("classify", "heatmap", "differential", "generate_descriptors")


def register(ctx) -> None:
    """The named endpoints, described on the API page."""
    endpoints = Endpoints(ctx)
    for name in ENDPOINTS:
        function = getattr(endpoints, name)
        gr.api(function, api_name=name)
        describe(ctx.page, name, function)


def describe(page: gr.Blocks, api_name: str, function) -> None:
    """Give an endpoint's parameters and return value the descriptions in `function`'s docstring on the API page.

    `gr.api` builds its components from type hints alone and labels them by
    position ("the 1st Api component"); this names them and adds the text.
    """
    from gradio.utils import get_function_description

    _, parameters, returns = get_function_description(function)
    block = next(f for f in page.fns.values() if f.api_name == api_name)
    names = [name for name in inspect.signature(function).parameters if name != "request"]
    for component, name in zip(block.inputs, names, strict=False):  # gr.api has no component for `request`
        component.label = name
        component._api_info = {**component._api_info, "additional_description": parameters.get(name, "")}
    for component in block.outputs:
        component.label = "result"
        component._api_info = {**component._api_info, "description": " ".join(returns).strip()}
