"""Tab: evaluate a dataset. A zipped or server-side ImageFolder tree, scored with the session's descriptors.

Accuracy by description, by the template baseline, and with random
descriptors as a control, per model; then views of samples worth a look,
and the self-contained report.html to download. The evaluation itself is
`explain.evaluate`'s, the same as the command line's; this tab only finds
the dataset, shows progress, and turns the run into a table and galleries.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from descriptors import DescriptorError
from explain import ExplainerPool
from explain.datasets import load_dataset
from explain.evaluate import METHODS, EvaluationRun, PromptRecipe, run_evaluation
from explain.report import write_report
from web.messages import USER_ERRORS, md, short_name
from web.settings import Settings
from web.uploads import data_folder, data_folders, extract_zip, file_path, shown_path, work_folder

TITLE = "Evaluate a dataset"
METRIC_COLUMNS = ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece")


def find_dataset(settings: Settings, zip_file, folder_name: str | None) -> tuple[Path, str, Path] | None:
    """(dataset folder, the name the visitor knows it by, the root nothing outside of may be read), or None."""
    if zip_file is not None:
        shown = Path(file_path(zip_file)).name  # Gradio keeps the visitor's file name
        work = work_folder(settings, "data")
        try:
            folder = extract_zip(settings, file_path(zip_file), work)
        except DescriptorError:
            shutil.rmtree(work, ignore_errors=True)  # a refused upload leaves nothing behind
            raise
        return folder, shown, folder
    if folder_name:
        return data_folder(settings, folder_name), folder_name, settings.data_root
    return None


def evaluate_upload(
    models: ExplainerPool,
    settings: Settings,
    model_names: list[str] | None,
    zip_file,
    folder_name: str | None,
    descriptors: dict,
    limit,
    progress=None,
):
    """Evaluate a zipped or server-side ImageFolder; returns (metrics rows, report path, galleries, view names,
    message)."""
    folder, shown = None, "the dataset"
    try:
        found = find_dataset(settings, zip_file, folder_name)
        if found is None:
            return [], None, {}, [], "Upload a zip of an ImageFolder tree, or pick a server folder."
        folder, shown, root = found
        names = [name for name in (model_names or models.names[:1]) if name in models.names]
        explainers = {name: models.get(name) for name in names}
        # Nothing outside the data root (or the upload's own folder) is read, symbolic links included.
        dataset = load_dataset(folder, int(limit) if limit else None, root=root)
        run = run_evaluation(
            dataset, descriptors, explainers, PromptRecipe(), models.store, workers=2, progress=_steps(progress)
        )
        # The visitor sees their own names, never the server's folders.
        run.unreadable = {
            shown_path(path, folder, shown): shown_path(reason, folder, shown)
            for path, reason in run.unreadable.items()
        }
        report = write_report(run, work_folder(settings, "report"))["report.html"]
    except USER_ERRORS as error:
        return [], None, {}, [], f"**Could not evaluate:** {md(shown_path(str(error), folder, shown))}"
    galleries = view_galleries(run)
    return metric_rows(run), str(report), galleries, list(galleries), _summary(run)


def _steps(progress):
    """A step counter for each stage of the run, shown in Gradio's progress display."""

    def step(label: str, total: int):
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            if progress is not None:
                progress((done[0], total), desc=f"Embedding {label}")

        return advance

    return step


def metric_rows(run: EvaluationRun) -> list[list]:
    """The metrics table: one row per model and method, four decimals, empty where undefined (acc5 below five
    classes)."""
    return [
        [short_name(model), method, *(_rounded(methods[method][key]) for key in METRIC_COLUMNS)]
        for model, methods in run.metrics.items()
        for method in METHODS
    ]


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 4)


def view_galleries(run: EvaluationRun) -> dict[str, list[tuple[str, str]]]:
    """Each view with samples in it, named with short model names: its thumbnails, captioned true → predicted."""
    predicted = {short_name(m): e.methods["descriptors"].logits.argmax(axis=1) for m, e in run.evaluations.items()}

    def caption(i: int) -> str:
        guesses = [run.dataset.classes[p[i]] for p in predicted.values()]
        if len(predicted) == 1:
            return f"{run.dataset.labels[i]} → {guesses[0]}"
        return f"{run.dataset.labels[i]} → " + ", ".join(f"{m}: {g}" for m, g in zip(predicted, guesses, strict=True))

    galleries = {}
    for name, indices in run.views.items():
        if indices:
            for model in run.evaluations:
                name = name.replace(model, short_name(model))
            galleries[f"{name} ({len(indices)})"] = [(str(run.dataset.paths[i]), caption(i)) for i in indices[:60]]
    return galleries


def _summary(run: EvaluationRun) -> str:
    notes = [f"Evaluated {len(run.dataset.paths)} images in {len(run.dataset.classes)} classes."]
    if run.missing:
        notes.append(
            f"{len(run.missing)} classes had no descriptors and used the template: {md(', '.join(run.missing[:20]))}."
        )
    if run.unreadable:
        notes.append(
            f"{len(run.unreadable)} images could not be read and were left out: "
            + md("; ".join(list(run.unreadable.values())[:5]))
            + "."
        )
    return " ".join(notes)


def view_gallery(galleries: dict, name: str | None) -> list:
    """The thumbnails of one view."""
    return (galleries or {}).get(name or "", [])


def build(ctx) -> None:
    ui, names = ctx.ui, ctx.models.names
    gr.Markdown(
        "Evaluate an ImageFolder tree (one folder per class) with this session's descriptors: "
        "accuracy by description, by the template baseline, and with random descriptors as a control."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            ui.dataset_zip = gr.File(
                label=f"Zip of an ImageFolder tree (up to {ctx.settings.max_zip_bytes // 2**20} MB)",
                file_types=[".zip"],
            )
            ui.server_folder = gr.Dropdown(
                data_folders(ctx.settings),
                label="Or a folder on the server",
                visible=ctx.settings.data_root is not None,
            )
            ui.eval_models = gr.CheckboxGroup(
                [(short_name(n), n) for n in names], value=names, label="Models", visible=len(names) > 1
            )
            ui.limit = gr.Number(0, label="Evaluate at most this many images (0: all)", precision=0, minimum=0)
            ui.evaluate_button = gr.Button("Evaluate", variant="primary")
            ui.eval_status = gr.Markdown(elem_classes="descry-status", elem_id="eval-status")
            ui.report_file = gr.File(label="report.html (self-contained)", interactive=False, visible=False)
        with gr.Column(scale=6, min_width=320):
            ui.metrics_table = gr.Dataframe(
                headers=["model", "method", "acc1", "acc5", "mean per-class recall", "mean confidence", "ece"],
                label="Metrics",
                interactive=False,
                visible=False,
            )
            ui.view_picker = gr.Dropdown([], label="View", visible=False)
            ui.view_images = gr.Gallery(
                label="Samples in this view (true → predicted)", columns=4, height=360, visible=False
            )
    ui.galleries = gr.State({})


def wire(ctx) -> None:
    ui = ctx.ui

    def run(model_names, zip_value, folder_value, descriptors, limit_value, progress=gr.Progress()):
        rows, report, galleries, views, status = evaluate_upload(
            ctx.models, ctx.settings, model_names, zip_value, folder_value, descriptors, limit_value, progress
        )
        ran = report is not None
        picker = gr.update(choices=views, value=views[0] if views else None, visible=ran and bool(views))
        return gr.update(value=rows, visible=ran), gr.update(value=report, visible=ran), galleries, picker, status

    def show_view(galleries, name):
        items = view_gallery(galleries, name)
        return gr.update(value=items, visible=bool(items))

    ui.evaluate_button.click(
        run,
        [ui.eval_models, ui.dataset_zip, ui.server_folder, ui.descriptor_set, ui.limit],
        [ui.metrics_table, ui.report_file, ui.galleries, ui.view_picker, ui.eval_status],
        api_visibility="private",
        show_progress_on=[ui.eval_status],
    ).then(show_view, [ui.galleries, ui.view_picker], ui.view_images, api_visibility="private")
    ui.view_picker.change(show_view, [ui.galleries, ui.view_picker], ui.view_images, api_visibility="private")
