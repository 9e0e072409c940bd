"""Tab: evaluate a dataset. A zipped or server-side ImageFolder tree, scored with the session's descriptors.

Accuracy by description, by the template baseline, and with random
descriptors as a control, per model; then views of samples worth a look,
and the self-contained report.html to download. The evaluation itself is
`explain.evaluate`'s, the same as the command line's; this tab only finds
the dataset, shows progress, and turns the run into a table and galleries.
"""

from __future__ import annotations

import queue
import shutil
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from descriptors import DescriptorError
from explain import ExplainerPool
from explain.datasets import load_dataset
from explain.evaluate import METHODS, EvaluationRun, PromptRecipe, run_evaluation
from explain.report import write_report
from web.context import QUIET
from web.messages import USER_ERRORS, md, short_name
from web.settings import Settings
from web.uploads import data_folder, data_folders, extract_zip, file_path, shown_path, work_folder

ID = "evaluate"
TITLE = "Evaluate a dataset"
METRIC_COLUMNS = ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece")
HEADERS = ["model", "method", "top-1", "top-5", "per-class recall", "confidence", "ECE"]
METHOD_NAMES = {  # the names the table shows, beside the ones metrics.json uses
    "descriptors": "by description",
    "baseline": "template alone",
    "waffle": "random descriptors",
}
LEGEND = (
    "**by description**: each class scored by the mean of its descriptors (the paper's method). "
    '**template alone**: one prompt per class, "a photo of a …". **random descriptors**: WaffleCLIP\'s control, '
    "random words and characters in place of the descriptors; if it scores as well as yours, the descriptors are "
    "not what helps. **top-5** is n/a with fewer than five classes, where every image would count as right. "
    "**per-class recall**: the mean over classes of the share of each class found. **confidence**: the mean "
    "probability of the predicted class. **ECE**: expected calibration error, how far confidence is from "
    "accuracy (0% is perfectly calibrated)."
)


@dataclass
class Evaluated:
    """What one evaluation shows: the table, the report, the views, the classes, and a message."""

    rows: list[list] = field(default_factory=list)
    report: str | None = None
    galleries: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    classes: str = ""  # the dataset's classes as the Explain tab takes them
    message: str = ""


def find_dataset(
    settings: Settings, zip_file, folder_name: str | None, made: list[Path] | None = None
) -> tuple[Path, str, Path] | None:
    """(dataset folder, the name the visitor knows it by, the root nothing outside of may be read), or None.

    A work folder made for an upload is added to `made`."""
    if zip_file is not None:
        shown = Path(file_path(zip_file)).name  # Gradio keeps the visitor's file name
        work = work_folder(settings, "data")
        if made is not None:
            made.append(work)
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
) -> Evaluated:
    """Evaluate a zipped or server-side ImageFolder, saying at each stage what it is doing.

    A run that fails, for whatever reason, leaves none of the folders it made behind; one that fails for a
    reason that is no fault of the visitor's says so in one line, and the log has the details."""
    made: list[Path] = []
    try:
        done = _evaluate(models, settings, model_names, zip_file, folder_name, descriptors, limit, progress, made)
    except Exception:  # a bug: its traceback is for the log, not the page
        traceback.print_exc()
        done = Evaluated(message="**Could not evaluate:** something went wrong on the server; its log says what.")
    if done.report is None:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
    return done


def _evaluate(models, settings, model_names, zip_file, folder_name, descriptors, limit, progress, made) -> Evaluated:
    folder, shown = None, "the dataset"
    say = progress or (lambda *args, **kwargs: None)
    try:
        say(None, desc="Unpacking the zip" if zip_file is not None else "Reading the folder")
        found = find_dataset(settings, zip_file, folder_name, made)
        if found is None:
            return Evaluated(message="Upload a zip of an ImageFolder tree, or pick a server folder.")
        folder, shown, root = found
        names = [name for name in (model_names or models.names[:1]) if name in models.names]
        say(None, desc="Loading the models")
        explainers = {name: models.get(name) for name in names}
        # Nothing outside the data root (or the upload's own folder) is read, symbolic links included.
        dataset = load_dataset(folder, int(limit) if limit else None, root=root)
        run = run_evaluation(
            dataset, descriptors, explainers, PromptRecipe(), models.store, workers=2, progress=_steps(say)
        )
        # The visitor sees their own names, never the server's folders.
        run.unreadable = {
            shown_path(path, folder, shown): shown_path(reason, folder, shown)
            for path, reason in run.unreadable.items()
        }
        say(None, desc="Writing the report")
        made.append(work_folder(settings, "report"))
        report = write_report(run, made[-1])["report.html"]
    except USER_ERRORS as error:
        return Evaluated(message=f"**Could not evaluate:** {md(shown_path(str(error), folder, shown))}")
    classes = ", ".join(run.labels.get(name, name) for name in run.dataset.classes)
    return Evaluated(metric_rows(run), str(report), view_galleries(run), classes, _summary(run))


def _steps(say):
    """A step counter for each stage of the run ("images, MODEL" or "prompts, MODEL"), named in the display."""

    def step(label: str, total: int):
        what, _, model = label.partition(", ")
        desc = f"Embedding {what} with {short_name(model)}" if model else f"Embedding {what}"
        done = [0]
        say((0, total), desc=desc)

        def advance(count: int) -> None:
            done[0] += count
            say((done[0], total), desc=desc)

        return advance

    return step


def metric_rows(run: EvaluationRun) -> list[list]:
    """The metrics table: one row per model and method, as percentages; n/a where a metric is undefined."""
    rows = []
    for model, methods in run.metrics.items():
        for method in METHODS:
            values = [methods[method][key] for key in METRIC_COLUMNS]
            rows.append([short_name(model), METHOD_NAMES[method], *(_percent(value) for value in values)])
    return rows


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


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
    notes.append("Pick a sample below to open it in Explain an image.")
    return " ".join(notes)


def view_gallery(galleries: dict, name: str | None) -> list:
    """The thumbnails of one view."""
    return (galleries or {}).get(name or "", [])


def build(ctx) -> None:
    ui = ctx.ui
    gr.Markdown(
        "Evaluate an ImageFolder tree (one folder per class) with this session's descriptors: "
        "accuracy by description, by the template alone, and with random descriptors as a control."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=320):
            _sources(ctx)
        with gr.Column(scale=6, min_width=320):
            ui.metrics_table = gr.Dataframe(
                headers=HEADERS,
                datatype="str",
                label="Metrics",
                interactive=False,
                visible=False,
                wrap=True,
                elem_id="eval-metrics",
            )
            ui.metrics_legend = gr.Markdown(LEGEND, visible=False)
            ui.view_picker = gr.Dropdown([], label="View", visible=False)
            ui.view_images = gr.Gallery(
                label="Samples in this view (true → predicted); pick one to open it in Explain an image",
                columns=4,
                height=360,
                object_fit="contain",
                preview=False,
                visible=False,
                elem_id="eval-gallery",
            )
    ui.galleries = gr.State({})
    ui.eval_classes = gr.State("")


def _sources(ctx) -> None:
    """Where the dataset comes from, which models, how many images, and the button."""
    ui, names, settings = ctx.ui, ctx.models.names, ctx.settings
    ui.dataset_zip = gr.File(
        label=f"Zip of an ImageFolder tree (up to {settings.max_zip_bytes // 2**20} MB)", file_types=[".zip"]
    )
    ui.server_folder = gr.Dropdown(
        data_folders(settings), label="Or a folder on the server", visible=settings.data_root is not None
    )
    ui.eval_models = gr.CheckboxGroup(
        [(short_name(n), n) for n in names], value=names, label="Models", visible=len(names) > 1
    )
    ui.limit = gr.Number(0, label="Evaluate at most this many images (0: all)", precision=0, minimum=0)
    ui.evaluate_button = gr.Button("Evaluate", variant="primary")
    ui.eval_status = gr.Markdown(elem_classes="descry-status", elem_id="eval-status")
    ui.report_file = gr.File(label="report.html (self-contained)", interactive=False, visible=False)


def progress_words(progress, desc: str | None = None) -> str:
    """What the status line says for one progress call (Gradio's `Progress` signature): the stage, and where
    it counts, how far it is."""
    stage = desc or "Working"
    if isinstance(progress, tuple) and progress[1]:
        done, total = progress
        return f"{stage}: {done:,} of {total:,} ({100 * done / total:.0f}%)"
    return f"{stage}…"


def evaluate_with_progress(models, settings, model_names, zip_value, folder_value, descriptors, limit_value):
    """Run `evaluate_upload` in a thread and yield ("progress", words) at most every `PROGRESS_SECONDS` while
    it runs, then ("done", Evaluated). The words go in the tab's own status line: Gradio's tracker over an
    empty Markdown is a line too short to show its bar or its stage."""
    said: queue.SimpleQueue[str] = queue.SimpleQueue()
    finished: list[Evaluated] = []

    def work() -> None:
        say = lambda progress=None, desc=None, **_: said.put(progress_words(progress, desc))  # noqa: E731
        args = (zip_value, folder_value, descriptors, limit_value, say)
        finished.append(evaluate_upload(models, settings, model_names, *args))

    worker = threading.Thread(target=work, name="descry-evaluate", daemon=True)
    worker.start()
    shown = "Starting…"
    yield "progress", shown
    while worker.is_alive():
        worker.join(PROGRESS_SECONDS)
        latest = shown
        while not said.empty():
            latest = said.get()
        if latest != shown and worker.is_alive():
            shown = latest
            yield "progress", latest
    yield "done", finished[0] if finished else Evaluated(message="**Could not evaluate:** the run was stopped.")


PROGRESS_SECONDS = 0.2  # how often the status line may change while a dataset is evaluated


def wire(ctx) -> None:
    ui = ctx.ui

    def run(model_names, zip_value, folder_value, descriptors, limit_value):
        steps = evaluate_with_progress(
            ctx.models, ctx.settings, model_names, zip_value, folder_value, descriptors, limit_value
        )
        for kind, found in steps:
            if kind == "progress":
                yield *(gr.skip(),) * 6, found
                continue
            ran, views = found.report is not None, list(found.galleries)
            picker = gr.update(choices=views, value=views[0] if views else None, visible=ran and bool(views))
            table = gr.update(value=found.rows, visible=ran)
            report = gr.update(value=found.report, visible=ran)
            yield table, gr.update(visible=ran), report, found.galleries, picker, found.classes, found.message

    def show_view(galleries, name):
        items = view_gallery(galleries, name)
        return gr.update(value=items, visible=bool(items))

    def open_in_explain(galleries, name, classes, event: gr.SelectData):
        items = view_gallery(galleries, name)
        if not items or event.index is None or event.index >= len(items):
            return gr.skip(), gr.skip(), gr.skip()
        return items[event.index][0], classes or gr.skip(), gr.Tabs(selected="explain")

    started = ui.evaluate_button.click(lambda: "", None, ui.eval_status, **QUIET)  # no old words under the bar
    finished = started.then(
        run,
        [ui.eval_models, ui.dataset_zip, ui.server_folder, ui.descriptor_set, ui.limit],
        [
            ui.metrics_table,
            ui.metrics_legend,
            ui.report_file,
            ui.galleries,
            ui.view_picker,
            ui.eval_classes,
            ui.eval_status,
        ],
        api_visibility="private",
        show_progress="hidden",  # the status line says the stage and how far it is (see evaluate_with_progress)
    )
    finished.then(show_view, [ui.galleries, ui.view_picker], ui.view_images, api_visibility="private")
    ui.view_picker.change(show_view, [ui.galleries, ui.view_picker], ui.view_images, api_visibility="private")
    ui.view_images.select(
        open_in_explain, [ui.galleries, ui.view_picker, ui.eval_classes], [ui.image, ui.classes, ui.tabs], **QUIET
    )
