"""Room: the descriptor editor. Pick a class, edit its features one per line, and the answer updates as you type.

Every keystroke is one request that edits, scores and remembers in one go
(`trigger_mode="always_last"`: a newer keystroke replaces one still
waiting). The buttons fill classes without features from the LLM, remove
a class, go back to the shipped set, and move the set in and out as JSON.
Each session's set lives in `gr.State`, so no visitor sees another's edits.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from descriptors import DescriptorError, descriptors_of, find_key, normalise_name, parse_class_list
from descriptors.generate import llm_model_name
from descriptors.limits import RequestLimits
from descriptors.store import merge_descriptors, missing_classes, parse_descriptors, parse_json, require_distinct
from web.context import QUIET
from web.examples import shipped_descriptors
from web.llm_gate import LLMFactory, LLMGate, NoLLM, generate_for, generation_cache, visitor_keys
from web.messages import USER_ERRORS, note
from web.scoring import explain_for, inputs, outputs, remember, updates
from web.uploads import download_file, file_path


def editor_choices(
    classes_text: str, descriptors: dict, editing: str | None, limits: RequestLimits = RequestLimits()
) -> tuple[list[str], str | None, str]:
    """The class picker after the class list changed: (its choices, the class selected, that class's features)."""
    names = parse_class_list(classes_text or "")[: limits.max_classes]
    keys = {normalise_name(name) for name in names}
    selected = editing if editing and normalise_name(editing) in keys else (names[0] if names else None)
    return names, selected, features_text(descriptors, selected)


def features_text(descriptors: dict, class_name: str | None) -> str:
    """A class's descriptors, one per line, for the editor."""
    return "\n".join(descriptors_of(descriptors, class_name)) if class_name else ""


def edit_features(descriptors: dict, class_name: str | None, text: str) -> dict:
    """A copy of the session's descriptors with one class's features replaced by the edited lines."""
    if not class_name:
        return descriptors
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    updated = {name: list(values) for name, values in descriptors.items()}
    updated[find_key(updated, class_name) or class_name] = lines
    return updated


def remove_class(classes_text: str, class_name: str | None) -> str:
    """The class list without `class_name`."""
    if not class_name:
        return classes_text
    wanted = normalise_name(class_name)
    return ", ".join(name for name in parse_class_list(classes_text or "") if normalise_name(name) != wanted)


def generate_missing(
    descriptors: dict,
    classes_text: str,
    limits: RequestLimits,
    llm_factory: LLMFactory,
    gate: LLMGate | None = None,
    visitor: str = "local",
) -> tuple[dict, str, str | None]:
    """Fill the listed classes that have no descriptors, with the LLM.

    Returns (descriptors, message, the first class filled or None), so that the editor can show what came.
    """
    try:
        missing = missing_classes(descriptors, limits.choose(classes_text, descriptors))
        if not missing:
            return descriptors, note("info", "Every class already has descriptors."), None
        result, llm_name = generate_for(missing, llm_factory, gate, visitor, limits=limits)
    except NoLLM as error:
        return descriptors, note("error", str(error)), None
    except USER_ERRORS as error:
        return descriptors, note("error", f"Could not generate: {error}"), None
    merged, _ = merge_descriptors(descriptors, result.descriptors)
    try:
        limits.check_state(merged, classes_text)
    except DescriptorError as error:
        return descriptors, note("error", f"Could not keep the generated descriptors: {error}"), None
    filled = list(result.descriptors)
    status = [f"Generated descriptors for {len(filled)} of {len(missing)} classes with {llm_name}."]
    if filled:
        status.append(f"The editor shows {filled[0]}.")
    status += [f"Could not generate {name}: {reason}." for name, reason in result.failures.items()]
    return merged, note("error" if result.failures else "done", " ".join(status)), (filled[0] if filled else None)


def reset_descriptors(classes_text: str, llm_name: str, limits: RequestLimits = RequestLimits()) -> dict:
    """The shipped set, plus cached answers of the LLM `llm_name` for listed classes the set lacks."""
    shipped = shipped_descriptors()
    cache = generation_cache()
    cached = {}
    for name in parse_class_list(classes_text or "")[: limits.max_classes]:
        if find_key(shipped, name) is None:
            hit = cache.get(llm_name, name)
            if hit:
                cached[name] = hit
    return merge_descriptors(shipped, cached)[0]


def upload_descriptors(file, descriptors: dict, classes_text: str, limits: RequestLimits) -> tuple[dict, str, str]:
    """Replace the session's set with an uploaded file; returns (descriptors, classes text, message)."""
    path = file_path(file)
    if path is None:
        return descriptors, classes_text, note("info", "No file was uploaded.")
    try:
        size = Path(path).stat().st_size
        if size > limits.max_state_bytes:  # refused before a byte of it is read
            raise DescriptorError(
                f"the uploaded file is {size / 1024:,.0f} KB; "
                f"a session holds at most {limits.max_state_bytes // 1024} KB"
            )
        text = Path(path).read_text(encoding="utf-8")
        uploaded = require_distinct(parse_descriptors(parse_json(text, "the uploaded file"), "the uploaded file"))
        if not uploaded:
            raise DescriptorError("the uploaded file has no classes")
        if len(uploaded) > limits.max_classes:
            raise DescriptorError(f"the uploaded file has {len(uploaded)} classes; the app takes {limits.max_classes}")
        limits.check_names(uploaded)
        limits.check_state(uploaded, ", ".join(uploaded))
    except UnicodeDecodeError:
        return descriptors, classes_text, note("error", "Could not load the file: it is not UTF-8 text.")
    except DescriptorError as error:
        return descriptors, classes_text, note("error", f"Could not load the file: {error}")
    except OSError as error:
        reason = f"{Path(path).name} cannot be read ({error.__class__.__name__})"
        return descriptors, classes_text, note("error", f"Could not load the file: {reason}.")
    return uploaded, ", ".join(uploaded), note("done", f"Loaded {len(uploaded)} classes from the uploaded file.")


def picker_choices(names: list[str], descriptors: dict) -> list[tuple[str, str]]:
    """The class picker's entries: each class, marked when it has no features yet."""
    have = {normalise_name(name) for name, values in descriptors.items() if any(v.strip() for v in values)}
    return [(name if normalise_name(name) in have else f"{name} (no features)", name) for name in names]


def build(ctx) -> None:
    """The class picker, its features, and the row of actions on the set."""
    ui = ctx.ui
    first_classes = parse_class_list(ui.classes.value)
    ui.editing = gr.Dropdown(
        picker_choices(first_classes, ui.descriptor_set.value), value=first_classes[0], label="Edit the features of"
    )
    ui.features = gr.Textbox(
        features_text(ui.descriptor_set.value, first_classes[0]),
        lines=6,
        max_lines=16,
        label="Features, one per line",
        placeholder="No features yet: type one per line, or press Generate with LLM.",
    )
    with gr.Row():
        ui.generate_button = gr.Button("Generate with LLM", size="sm")
        ui.remove_button = gr.Button("Remove class", size="sm")
        ui.undo_button = gr.Button("Undo remove", size="sm", visible=False)
        ui.reset_button = gr.Button("Reset", size="sm")
    ui.removed = gr.State(None)  # the class list before the last removal, for Undo
    ui.ranking_next = gr.State(None)  # the ranking chart a keystroke made, sent right after its other charts

    def follow(classes_text, descriptors, editing):
        names, selected, text = editor_choices(classes_text, descriptors, editing, ctx.limits)
        return gr.update(choices=picker_choices(names, descriptors), value=selected), text

    ctx.events.editor_follows = dict(
        fn=follow, inputs=[ui.classes, ui.descriptor_set, ui.editing], outputs=[ui.editing, ui.features], **QUIET
    )


def build_file_buttons(ctx) -> None:
    """Download and Upload JSON, for the row under the editor."""
    ctx.ui.download_button = gr.DownloadButton(
        "Download JSON", value=download_file(ctx.settings, ctx.ui.descriptor_set.value), size="sm"
    )
    ctx.ui.upload_button = gr.UploadButton("Upload JSON", file_types=[".json"], size="sm")


def wire(ctx) -> None:
    ui = ctx.ui

    def type_features(model_name, image_value, classes_text, descriptors, editing, width, previous, picked, text):
        """One request per keystroke: edit, score, remember, refresh the download and the pickers."""
        updated = edit_features(descriptors, editing, text)
        try:
            ctx.limits.check_state(updated, classes_text)
        except DescriptorError as error:  # the set stays as it was; the message says why
            sent = [gr.skip()] * 12 + [None]  # nothing changes but the message, and no ranking follows
            sent[7] = note("error", f"Could not keep that edit: {error}")
            return tuple(sent)
        shown = explain_for(ctx, model_name, image_value, classes_text, updated, editing, width)
        saved, download = remember(ctx.settings, updated, classes_text, image_value)
        had, has = bool(descriptors_of(descriptors, editing or "")), bool(descriptors_of(updated, editing or ""))
        marks = gr.skip() if had == has else gr.update(choices=picker_choices(parse_class_list(classes_text), updated))
        ranking, *rest = updates(shown, previous, picked)
        # The ranking follows in a second, separate reply: the browser draws the chart being edited first.
        return updated, gr.skip(), *rest, saved, download, marks, ranking

    typed = ui.features.input(
        type_features,
        [*inputs(ctx), ui.features],
        [ui.descriptor_set, *outputs(ctx), ui.remembered, ui.download_button, ui.editing, ui.ranking_next],
        trigger_mode="always_last",
        preprocess=False,
        **QUIET,
    )
    typed.then(lambda ranking: gr.skip() if ranking is None else ranking, ui.ranking_next, ui.ranking_plot, **QUIET)
    ui.editing.input(features_text, [ui.descriptor_set, ui.editing], ui.features, **QUIET)
    ctx.after_change(ui.classes.submit, fresh=True)
    # Leaving the box (often to click a button) is no new action: it must not wipe that button's message.
    ctx.after_change(ui.classes.blur)
    _wire_remove(ctx)
    _wire_set_buttons(ctx)


def _wire_remove(ctx) -> None:
    """Remove class says what it removed and offers Undo, which puts the class list back as it was."""
    ui = ctx.ui

    def remove(classes_text, class_name):
        if not class_name:
            return gr.skip(), note("info", "Pick a class to remove first."), gr.skip(), gr.skip()
        message = note("done", f"Removed {class_name}. Undo remove brings it back.")
        return remove_class(classes_text, class_name), message, classes_text, gr.update(visible=True)

    def undo(before, classes_text):
        if before is None:
            return gr.skip(), gr.skip(), None, gr.update(visible=False)
        back = [name for name in parse_class_list(before) if name not in parse_class_list(classes_text)]
        message = note("done", f"Brought back {', '.join(back) or 'the class list'}.")
        return before, message, None, gr.update(visible=False)

    removed = ui.remove_button.click(
        remove, [ui.classes, ui.editing], [ui.classes, ui.message, ui.removed, ui.undo_button], **QUIET
    )
    ctx.after_change(removed)
    restored = ui.undo_button.click(
        undo, [ui.removed, ui.classes], [ui.classes, ui.message, ui.removed, ui.undo_button], **QUIET
    )
    ctx.after_change(restored)


def _wire_set_buttons(ctx) -> None:
    """Generate, Reset and Upload replace the set; each says what it did, and the image is scored again."""
    ui = ctx.ui

    def fill(descriptors, classes_text, editing, request: gr.Request):
        merged, message, first = generate_missing(
            descriptors, classes_text, ctx.limits, ctx.llm, ctx.gate, visitor_keys(request, ctx.settings.proxy_hops)
        )
        return merged, message, first or editing  # the editor shows a class that was just filled

    def reset(classes_text):
        restored = reset_descriptors(classes_text, llm_model_name(), ctx.limits)
        return restored, note("done", "Back to the shipped descriptors.")

    def upload(file, descriptors, classes_text):
        return upload_descriptors(file, descriptors, classes_text, ctx.limits)

    generated = ui.generate_button.click(
        fill,
        [ui.descriptor_set, ui.classes, ui.editing],
        [ui.descriptor_set, ui.message, ui.editing],
        api_visibility="private",
        show_progress_on=[ui.message],
    )
    ctx.after_change(generated)
    ctx.after_change(ui.reset_button.click(reset, ui.classes, [ui.descriptor_set, ui.message], **QUIET))
    uploaded = ui.upload_button.upload(
        upload, [ui.upload_button, ui.descriptor_set, ui.classes], [ui.descriptor_set, ui.classes, ui.message], **QUIET
    )
    ctx.after_change(uploaded)
