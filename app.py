"""Descry's web app: upload an image, name classes, see which descriptors drove the prediction.

A thin Gradio layer over `explain.Explainer`: the handlers parse the page's
inputs, call the engine, and turn its records into table rows. The model is
loaded once per process, on first use, never at import time.

    python app.py [--model HUB_ID_OR_DIR] [--port N] [--share]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

import gradio as gr

from descriptors import DescriptorError, parse_class_list, parse_descriptors, select_classes
from explain import DEFAULT_MODEL, Explainer, ExplainError, load_model, open_image

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_DESCRIPTORS = ASSETS / "descriptors" / "demo.json"


class ExplainerHolder:
    """Loads the model on first use and shares one Explainer (and its caches) across sessions."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self._explainer: Explainer | None = None
        self._lock = threading.Lock()

    def get(self) -> Explainer:
        with self._lock:
            if self._explainer is None:
                self._explainer = Explainer(load_model(self.model_name))
            return self._explainer


def explain_image(holder: ExplainerHolder, image, classes_text: str, descriptors_text: str):
    """Handler: returns (ranking rows, descriptor rows for the top two classes, status line)."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        data = json.loads(descriptors_text or "{}")
    except json.JSONDecodeError as error:
        raise gr.Error(f"The descriptors are not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}.")
    try:
        classes = parse_class_list(classes_text) if classes_text and classes_text.strip() else None
        descriptors = select_classes(parse_descriptors(data), classes)
        result = holder.get().classify(open_image(image, "the uploaded image"), descriptors)
    except (DescriptorError, ExplainError) as error:
        raise gr.Error(str(error))
    baseline = {entry.name: entry.probability for entry in result.baseline}
    ranking = [
        [entry.name, round(entry.probability, 4), round(entry.score, 2), round(baseline[entry.name], 4)]
        for entry in result.predictions
    ]
    features = [[entry.name, d.descriptor, round(d.score, 2)] for entry in result.predictions[:2] for d in entry.descriptors]
    note = ""
    if result.fallback_classes:
        note = "No descriptors, scored with the template prompt: " + ", ".join(result.fallback_classes)
    return ranking, features, note


def build_app(model_name: str) -> gr.Blocks:
    holder = ExplainerHolder(model_name)
    demo_descriptors = DEMO_DESCRIPTORS.read_text(encoding="utf-8")
    with gr.Blocks(title="Descry: classification by description") as app:
        gr.Markdown("# Descry\nExplainable zero-shot image classification by description.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image")
                classes = gr.Textbox(label="Classes (comma-separated; empty means every class in the descriptors)")
                descriptors = gr.Code(demo_descriptors, language="json", label="Descriptors")
                run = gr.Button("Explain", variant="primary")
            with gr.Column():
                ranking = gr.Dataframe(headers=["class", "probability", "score", "baseline"], label="Ranking", interactive=False)
                features = gr.Dataframe(headers=["class", "descriptor", "score"], label="Descriptors of the top two", interactive=False)
                note = gr.Markdown()
        gr.Markdown(f"Model: `{model_name}`")
        run.click(
            lambda *args: explain_image(holder, *args),
            inputs=[image, classes, descriptors],
            outputs=[ranking, features, note],
            api_name="classify",
        )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Descry web app")
    parser.add_argument("--model", default=os.environ.get("EXPLAIN_MODEL", DEFAULT_MODEL), help="hub id or local directory")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args()
    build_app(args.model).launch(server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
