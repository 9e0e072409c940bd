"""The web app's rooms, their handlers called directly: charts from the engine, edits, LLM buttons, files, bad input."""

import json
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from descriptors import DescriptorError, load_descriptors
from descriptors.generate import make_llm
from descriptors.limits import RequestLimits
from explain import ExplainerPool
from tests.conftest import FROGS, random_image
from tests.fake_llm import FakeLLM, answer, stall
from web import (
    api,
    compare,
    editor,
    evaluate_tab,
    examples,
    heatmaps,
    llm_gate,
    messages,
    scoring,
    sharing,
    tell_apart,
    uploads,
)
from web.page import build_app, launch_options
from web.settings import Settings

EXAMPLE = examples.EXAMPLES[0]
LIMITS = RequestLimits()


@pytest.fixture
def models(clip_dir):
    return ExplainerPool([str(clip_dir)], device="cpu")


@pytest.fixture
def settings(tmp_path):
    """The app's settings with its folders inside the test's own."""
    return Settings(work_dir=tmp_path / "work", downloads=tmp_path / "downloads")


def explain_image(models, image, classes, descriptors, on_encode=None):
    return scoring.explain_image(models, LIMITS, None, image, classes, descriptors, on_encode)


def llm_for(server, timeout=5.0):
    return lambda: make_llm("test-model", server.url, None, timeout=timeout, max_retries=0)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "frog.png"
    random_image(4, size=(64, 48)).save(path)
    return str(path)


@pytest.fixture
def no_llm(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_explain_returns_three_charts_a_record_and_a_status(models, image_file):
    shown = explain_image(models, image_file, "tree frog, tailed frog, axolotl", FROGS)
    ranking, descriptors, contrast, record, headline = (
        shown.ranking,
        shown.descriptors,
        shown.contrast,
        shown.record,
        shown.headline,
    )
    assert shown.state == "ok" and shown.message == ""
    scores = [p["score"] for p in record["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert {p["class"] for p in record["predictions"]} == {"tree frog", "tailed frog", "axolotl"}
    assert record["contrast"]["margin"] == pytest.approx(
        record["predictions"][0]["score"] - record["predictions"][1]["score"]
    )
    assert len(ranking.data) == 2 and len(descriptors.data) == 3 and len(contrast.data) == 4
    assert "scored 3 classes" in headline
    # What the visitor should know about the set stands out from the grey details line.
    assert '<div class="descry-warning">No descriptors, scored with the template: axolotl.</div>' in headline
    top = record["predictions"][0]
    assert 'class="descry-answer"' in headline and f"{top['class']} " in headline


def test_explain_matches_the_engine(models, image_file):
    record = explain_image(models, image_file, "tree frog, bullfrog", FROGS).record
    engine = models.get().classify(
        image_file, {"tree frog": FROGS["tree frog"], "bullfrog": FROGS["bullfrog"]}, name="image"
    )
    assert record["predictions"] == engine.to_dict()["predictions"]


def test_editing_one_descriptor_re_encodes_one_prompt_only(models, image_file):
    explain_image(models, image_file, "tree frog, tailed frog", FROGS)
    explainer = models.get()
    images_before, texts_before = explainer.images_encoded, explainer.texts_encoded
    edited = editor.edit_features(FROGS, "Tree_Frog", "webbed hind feet\n" + "\n".join(FROGS["tree frog"][1:]))
    shown = explain_image(models, image_file, "tree frog, tailed frog", edited)
    record = shown.record
    assert explainer.texts_encoded - texts_before == 1 and explainer.images_encoded == images_before
    assert "1 new prompts encoded" in shown.headline
    tree = next(p for p in record["predictions"] if p["class"] == "tree frog")
    assert "webbed hind feet" in {d["descriptor"] for d in tree["descriptors"]}


def test_edits_return_a_new_set_and_never_touch_the_old_one():
    original = {"newt": ["a crest"]}
    edited = editor.edit_features(original, "newt", "a crest\n\n  orange belly  \n")
    assert edited == {"newt": ["a crest", "orange belly"]} and original == {"newt": ["a crest"]}
    assert editor.edit_features(original, "Axolotl", "gills") == {"newt": ["a crest"], "Axolotl": ["gills"]}
    assert editor.edit_features(original, None, "x") is original


def test_editor_follows_the_class_list():
    names, selected, text = editor.editor_choices("newt, toad", {"newt": ["a crest"]}, "toad")
    assert names == ["newt", "toad"] and selected == "toad" and text == ""
    names, selected, text = editor.editor_choices("newt", {"newt": ["a crest", "spots"]}, "toad")
    assert selected == "newt" and text == "a crest\nspots"
    assert editor.remove_class("newt, Toad, axolotl", "toad") == "newt, axolotl"


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("", "class list is empty"),
        ("newt, Newt", "listed twice"),
        (", ".join(f"c{i}" for i in range(1001)), "more than the app takes"),
    ],
)
def test_bad_class_lists_are_messages(models, image_file, classes, message):
    shown = explain_image(models, image_file, classes, FROGS)
    assert shown.state == "error" and (shown.ranking, shown.record, shown.headline) == (None, None, "")
    status = shown.message
    assert 'class="descry-message descry-error"' in status and "Could not explain: " in status and message in status


def test_three_hundred_classes_work(models, image_file):
    classes = ", ".join(f"class {i}" for i in range(300))
    shown = explain_image(models, image_file, classes, {})
    assert len(shown.record["predictions"]) == 300 and "top 15 of 300" in shown.ranking.figure().layout.title.text
    assert "scored 300 classes" in shown.headline


def test_bad_images_are_messages(models, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)
    assert "not a recognised image format" in explain_image(models, str(text), "newt", {}).message
    assert "100 megapixels" in explain_image(models, {"path": str(huge)}, "newt", {}).message
    empty = explain_image(models, None, "newt", {})
    assert empty.state == "empty" and "Upload an image" in empty.message


def test_an_unloadable_model_is_a_message_and_is_tried_once(image_file):
    models = ExplainerPool(["no-such-org/no-such-model"], device="cpu")
    error = models.load_error()
    assert "cannot load model 'no-such-org/no-such-model'" in error
    shown = explain_image(models, image_file, "newt", {})
    # One panel says why and what to do, in place of the explanation: no message beside it, no empty charts.
    assert shown.state == "error" and shown.message == "" and shown.ranking is None
    assert "cannot load model" in shown.headline and "python app.py --model DIR" in shown.headline
    assert "HF_HUB_OFFLINE=1" in shown.headline
    assert build_app(models, load_error=error) is not None


def test_generate_without_an_llm_says_how_to_configure_one(no_llm):
    descriptors, status, _ = editor.generate_missing({"newt": []}, "newt", LIMITS, llm_gate.app_llm(Settings()))
    assert descriptors == {"newt": []} and "OPENAI_API_KEY" in status and "OPENAI_BASE_URL" in status


def test_generate_fills_only_missing_classes():
    with FakeLLM() as server:
        server.script("axolotl", answer("- feathery gills\n- a wide head"))
        llm = llm_for(server)
        descriptors, status, shown = editor.generate_missing({"newt": ["a crest"]}, "newt, axolotl", LIMITS, llm)
        assert descriptors == {"newt": ["a crest"], "axolotl": ["feathery gills", "a wide head"]}
        assert [r["class"] for r in server.requests] == ["axolotl"] and "1 of 1 classes" in status
        assert shown == "axolotl" and "The editor shows axolotl." in status  # the editor switches to what came
        again = editor.generate_missing(descriptors, "newt, axolotl", LIMITS, llm)[1]
        assert "Every class already has descriptors." in again


def test_generate_timeout_is_a_message_and_keeps_the_set():
    with FakeLLM() as server:
        server.script("axolotl", stall(2.0))
        descriptors, status, _ = editor.generate_missing(
            {"newt": ["a crest"]}, "newt, axolotl", LIMITS, llm_for(server, timeout=0.3)
        )
        assert descriptors == {"newt": ["a crest"]}
        assert "Could not generate axolotl: timed out after 1 attempt." in status


def test_reset_restores_the_shipped_set():
    restored = editor.reset_descriptors("tree frog, axolotl", "test-model")
    assert restored["tree frog"] == load_descriptors(examples.SHIPPED)["tree frog"] and "axolotl" not in restored


def test_upload_and_download_round_trip(tmp_path, settings):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"newt": ["a crest"], "toad": ["warts"]}))
    descriptors, classes, status = editor.upload_descriptors({"path": str(path)}, {}, "x", LIMITS)
    assert descriptors == {"newt": ["a crest"], "toad": ["warts"]} and classes == "newt, toad" and "2 classes" in status
    path = uploads.download_file(settings, descriptors)
    assert json.loads(open(path, encoding="utf-8").read()) == descriptors
    assert uploads.download_file(settings, dict(descriptors)) == path  # same content, same file: no pile of folders
    assert uploads.download_file(settings, {"newt": ["a crest"]}) != path


@pytest.mark.parametrize(
    ("content", "message"),
    [("{oops", "not valid JSON"), ('{"newt": "crest"}', "expected a list of strings"), ("{}", "no classes")],
)
def test_bad_uploads_are_messages(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    descriptors, classes, status = editor.upload_descriptors(str(path), {"newt": ["a crest"]}, "newt", LIMITS)
    assert descriptors == {"newt": ["a crest"]} and classes == "newt" and message in status


def test_markdown_status_shows_markup_as_text():
    assert messages.md("<b>newt</b> *x* [a](b)") == r"&lt;b&gt;newt&lt;/b&gt; \*x\* \[a\]\(b\)"


def test_api_classify_errors_are_gradio_errors(models, image_file):
    record = api.api_classify(models, LIMITS, {"path": image_file}, "newt, toad", json.dumps({"newt": ["a crest"]}))
    assert {p["class"] for p in record["predictions"]} == {"newt", "toad"} and "contrast" in record
    with pytest.raises(gr.Error, match="not valid JSON"):
        api.api_classify(models, LIMITS, image_file, "newt", "{oops")
    with pytest.raises(gr.Error, match="class list is empty"):
        api.api_classify(models, LIMITS, image_file, "", "")


def test_model_names_from_flags_or_environment(monkeypatch):
    from explain.models import DEFAULT_MODEL, configured_models

    monkeypatch.setenv("EXPLAIN_MODEL", "a/b, c/d")
    assert configured_models(None) == ["a/b", "c/d"]
    assert configured_models(["x", "x", "y"]) == ["x", "y"]
    monkeypatch.delenv("EXPLAIN_MODEL")
    assert configured_models(None) == [DEFAULT_MODEL]


# --- the "Evaluate a dataset" tab ----------------------------------------------------------------------------

import stat  # noqa: E402
import zipfile  # noqa: E402


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def png_bytes(seed):
    import io

    buffer = io.BytesIO()
    random_image(seed, size=(40, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_zip_of_an_image_folder_is_evaluated(models, tmp_path, settings):
    entries = {
        f"frogs/{name}/{i}.png": png_bytes(10 * k + i)
        for k, name in enumerate(["tree_frog", "tailed frog"])
        for i in range(3)
    }
    archive = make_zip(tmp_path / "data.zip", entries)
    stages = []
    done = evaluate_tab.evaluate_upload(
        models, settings, None, {"path": str(archive)}, None, FROGS, None, lambda value, desc: stages.append(desc)
    )
    rows, report, galleries, status = done.rows, done.report, done.galleries, done.message
    short = Path(models.names[0]).name  # the table shows short model names, methods in words, percentages
    assert [row[:2] for row in rows] == [
        [short, "by description"],
        [short, "template alone"],
        [short, "random descriptors"],
    ]
    assert all(re.fullmatch(r"\d+\.\d%", row[2]) for row in rows) and {row[3] for row in rows} == {"n/a"}
    assert report.endswith("report.html") and open(report, encoding="utf-8").read().startswith("<!DOCTYPE html>")
    assert "Evaluated 6 images in 2 classes." in status
    assert all(items for items in galleries.values())  # only views with samples
    assert done.classes == "tailed frog, tree frog"  # as the Explain tab takes them: descriptor keys, folder order
    # One progress display that names each stage as it comes.
    named = list(dict.fromkeys(stages))
    assert named[:2] == ["Unpacking the zip", "Loading the models"] and named[-1] == "Writing the report"
    assert f"Embedding images with {short}" in named
    assert all(" → " in caption for items in galleries.values() for _, caption in items)
    some_view = next(name for name, items in galleries.items() if items)
    assert evaluate_tab.view_gallery(galleries, some_view)[0][1].split(" → ")[0] in {"tree_frog", "tailed frog"}


def test_the_evaluate_status_line_streams_the_stage_and_how_far_it_is(models, tmp_path, settings, monkeypatch):
    """Progress is streamed into the tab's own status line (Gradio's tracker over an empty Markdown showed
    only a timer): each stage in words, counted stages with "N of M (P%)", then the run's result."""
    monkeypatch.setattr(evaluate_tab, "PROGRESS_SECONDS", 0.001)
    assert evaluate_tab.progress_words((96, 300), "Embedding images with tiny") == (
        "Embedding images with tiny: 96 of 300 (32%)"
    )
    assert evaluate_tab.progress_words(None, "Unpacking the zip") == "Unpacking the zip…"
    names = ["newt", "toad"]
    entries = {f"frogs/{name}/{i}.png": png_bytes(7 * k + i) for k, name in enumerate(names) for i in range(40)}
    archive = make_zip(tmp_path / "data.zip", entries)
    real = evaluate_tab._steps

    def slow_steps(say):  # a step of this tiny model takes less than the status line's interval here
        def step(label, total):
            advance = real(say)(label, total)
            return lambda count: (time.sleep(0.02), advance(count))

        return step

    monkeypatch.setattr(evaluate_tab, "_steps", slow_steps)
    steps = list(evaluate_tab.evaluate_with_progress(models, settings, None, {"path": str(archive)}, None, FROGS, None))
    kinds = [kind for kind, _ in steps]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"progress"} and len(kinds) > 2
    assert "Evaluated 80 images in 2 classes." in steps[-1][1].message
    said = [words for kind, words in steps[:-1]]
    assert any(re.fullmatch(r"Embedding images with \S+: \d+ of 80 \(\d+%\)", words) for words in said)
    assert len(said) == len(set(said))  # a line is sent only when it changes


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"../escape.png": b"x"}, "points outside the upload folder"),
        ({"/etc/cron.d/evil": b"x"}, "points outside the upload folder"),
        ({"a/../../escape.png": b"x"}, "points outside the upload folder"),
    ],
)
def test_zip_paths_cannot_escape(tmp_path, settings, entries, message):
    archive = make_zip(tmp_path / "evil.zip", entries)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(DescriptorError, match=message):
        uploads.extract_zip(settings, str(archive), target)
    assert not (tmp_path / "escape.png").exists() and list(target.iterdir()) == []


def test_zip_links_size_and_format_are_checked(tmp_path, settings):
    link = zipfile.ZipInfo("classes/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DescriptorError, match="is a symbolic link"):
        uploads.extract_zip(settings, str(tmp_path / "link.zip"), tmp_path)
    (tmp_path / "not.zip").write_text("plain text")
    with pytest.raises(DescriptorError, match="not a zip file"):
        uploads.extract_zip(settings, str(tmp_path / "not.zip"), tmp_path)
    small = Settings(max_zip_bytes=250)  # unpacks to at most 1,000 bytes
    with pytest.raises(DescriptorError, match="would unpack to more than"):
        with zipfile.ZipFile(tmp_path / "big.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("a/b.png", b"0" * 5000)  # small packed, 5,000 bytes unpacked
        uploads.extract_zip(small, str(tmp_path / "big.zip"), tmp_path / "t")
    with pytest.raises(DescriptorError, match="larger than"):
        tiny = Settings(max_zip_bytes=10)
        uploads.extract_zip(tiny, str(make_zip(tmp_path / "small.zip", {"a/b.png": b"0" * 50})), tmp_path / "u")


def test_server_folders_stay_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "pets" / "cat").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "sneaky").symlink_to(tmp_path / "secret")
    with pytest.raises(DescriptorError, match="set DESCRY_DATA_ROOT"):
        uploads.data_folder(Settings(), "pets")
    rooted = Settings.from_environment({"DESCRY_DATA_ROOT": str(root)})
    assert uploads.data_folder(rooted, "pets") == (root / "pets").resolve()
    assert uploads.data_folders(rooted) == ["pets"]  # the link that leaves the root is not even offered
    for name in ("../secret", "sneaky", "/etc", "pets/../../secret"):
        with pytest.raises(DescriptorError, match="not a folder under the data root"):
            uploads.data_folder(rooted, name)


def test_evaluate_without_a_source_is_a_message(models, settings):
    done = evaluate_tab.evaluate_upload(models, settings, None, None, None, FROGS, None)
    assert done.message.startswith("Upload a zip") and done.report is None


def test_a_zip_that_lies_about_its_contents_leaves_nothing_behind(models, tmp_path, settings):
    archive = make_zip(
        tmp_path / "data.zip", {"frogs/tree_frog/0.png": png_bytes(1), "frogs/tailed frog/0.png": png_bytes(2)}
    )
    data = bytearray(archive.read_bytes())
    spot = data.index(png_bytes(2)[:8]) + 40  # inside the second image's stored bytes: its CRC no longer matches
    data[spot] ^= 0xFF
    archive.write_bytes(bytes(data))
    status = evaluate_tab.evaluate_upload(models, settings, None, {"path": str(archive)}, None, FROGS, None).message
    assert "the zip is damaged or unsupported" in status and "Bad CRC" in status
    assert list((tmp_path / "work").iterdir()) == []


def test_links_inside_a_server_dataset_are_not_followed(tmp_path):
    from explain.datasets import load_dataset

    root = tmp_path / "root"
    (root / "pets" / "cat").mkdir(parents=True)
    random_image(1).save(root / "pets" / "cat" / "kept.png")
    (tmp_path / "private").mkdir()
    random_image(2).save(tmp_path / "private" / "secret.png")
    (root / "pets" / "cat" / "leak.png").symlink_to(tmp_path / "private" / "secret.png")
    (root / "pets" / "dog").symlink_to(tmp_path / "private")
    dataset = load_dataset(root / "pets", root=root)
    assert [p.name for p in dataset.paths] == ["kept.png"] and dataset.classes == ["cat"]
    assert len(load_dataset(root / "pets").paths) == 3  # without a root, links are ordinary files


def test_work_folders_are_pruned_oldest_first(tmp_path, settings):
    import os

    made = []
    for i in range(5):
        folder = uploads.work_folder(settings, "data")
        (folder / "blob").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + i, 1000 + i))
        made.append(folder)
    uploads.prune_work(settings, max_bytes=2500, keep=1)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted(p.name for p in made[-2:])


def test_launch_limits_uploads_and_serves_the_data_root(models, tmp_path):
    assert build_app(models).delete_cache == (3600, 86400)  # Gradio sweeps its upload cache
    # The data root and the work folder, wherever it is, are served: the Evaluate tab shows their images.
    rooted = Settings(data_root=tmp_path / "data", work_dir=tmp_path / "work")
    options = launch_options(rooted, 7860)
    assert options["max_file_size"] == 200 * 2**20
    assert options["allowed_paths"] == [str((tmp_path / "data").resolve()), str((tmp_path / "work").resolve())]
    assert launch_options(Settings(), 7860)["allowed_paths"] == [str(Settings().work_dir.resolve())]


# --- request limits, and who may spend the LLM key --------------------------------------------------------------


def test_requests_are_bounded_with_one_line(models):
    many = {"newt": [f"feature {i}" for i in range(LIMITS.max_descriptors_per_class + 1)]}
    status = explain_image(models, str(EXAMPLE), "newt", many).message
    assert f"class 'newt' has {LIMITS.max_descriptors_per_class + 1} descriptors; the app takes at most" in status
    long = {"newt": ["x" * 5_000_000]}
    status = explain_image(models, str(EXAMPLE), "newt", long).message
    assert "5,000,000 characters long; the limit is 300" in status
    status = explain_image(models, str(EXAMPLE), "newt", {"newt": ["a crest \ud800"]}).message
    assert "class 'newt' contains a lone surrogate" in status
    wide = {f"class {i}": [f"feature {j}" for j in range(60)] for i in range(70)}
    status = explain_image(models, str(EXAMPLE), ", ".join(wide), wide).message
    assert "4,200 descriptors together; the app takes 4,000 per request" in status


def test_api_refuses_two_keys_for_one_class(models):
    with pytest.raises(gr.Error, match="the same class twice: 'Newt' and 'newt'"):
        api.api_classify(models, LIMITS, str(EXAMPLE), "newt", json.dumps({"Newt": ["a crest"], "newt": ["a tail"]}))


def test_llm_gate():
    now = [0.0]
    gate = llm_gate.LLMGate(per_visitor=2, per_minute=3, max_classes=5, clock=lambda: now[0])
    assert gate.refusal("a", 6) == "Ask for at most 5 classes at a time (6 were asked for)."
    assert gate.refusal("a", 1) is None and gate.refusal("a", 1) is None
    assert "This session has asked the LLM 2 times" in gate.refusal("a", 1)
    assert gate.refusal("b", 1) is None
    assert "busy with other visitors" in gate.refusal("c", 1)
    now[0] = 61.0  # a minute later, everyone may ask again
    assert gate.refusal("a", 1) is None
    closed = llm_gate.LLMGate.from_settings(Settings.from_environment({"DESCRY_LLM_PUBLIC": "0"}))
    assert closed.refusal("a", 1) == "LLM generation is turned off on this app by its owner."
    locked = llm_gate.LLMGate.from_settings(
        Settings.from_environment({"DESCRY_LLM_PUBLIC": "0", "DESCRY_LLM_TOKEN": "s3cret"})
    )
    assert "needs the owner's token" in locked.refusal("a", 1)
    assert "needs the owner's token" in locked.refusal("a", 1, "guess")
    assert locked.refusal("a", 1, "s3cret") is None


def test_generate_button_respects_the_gate():
    closed = llm_gate.LLMGate(public=False)
    descriptors, status, _ = editor.generate_missing({}, "axolotl", LIMITS, lambda: object(), closed)
    assert descriptors == {} and "turned off on this app by its owner" in status
    with pytest.raises(gr.Error, match="turned off on this app by its owner"):
        api.api_generate("axolotl", lambda: object(), closed)


def test_a_heavy_request_does_not_hold_up_a_light_one(clip_dir, tmp_path):
    """Two visitors at once: one request that takes seconds, one that takes milliseconds."""
    import threading
    import time

    from gradio_client import Client, handle_file

    class SlowOnMany:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_texts(self, prompts, progress=None):
            if len(prompts) > 100:
                time.sleep(3)
            return self.inner.encode_texts(prompts, progress=progress)

    models = ExplainerPool([str(clip_dir)], device="cpu")
    explainer = models.get()
    explainer.model = SlowOnMany(explainer.model)
    blocks = build_app(models)
    blocks.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        heavy = {f"class {i}": [f"feature {i} {j}" for j in range(20)] for i in range(10)}
        finished = {}

        def ask(name, classes, descriptors):
            Client(blocks.local_url, verbose=False).predict(
                handle_file(str(EXAMPLE)), classes, descriptors, api_name="/classify"
            )
            finished[name] = time.monotonic()

        slow = threading.Thread(target=ask, args=("heavy", ", ".join(heavy), json.dumps(heavy)))
        slow.start()
        time.sleep(0.5)
        ask("light", "tabby cat, espresso", "")
        slow.join(30)
        assert finished["light"] < finished["heavy"]
    finally:
        blocks.close()


def test_messages_name_the_visitors_files_not_server_folders(models, tmp_path, settings):
    entries = {f"frogs/{name}/{i}.png": png_bytes(i) for name in ("tree_frog", "tailed frog") for i in range(2)}
    entries["frogs/tree_frog/broken.png"] = b"not a png"
    archive = make_zip(tmp_path / "my-frogs.zip", entries)
    status = evaluate_tab.evaluate_upload(models, settings, None, {"path": str(archive)}, None, FROGS, None).message
    assert "1 images could not be read" in status and "my\\-frogs.zip" in status
    assert str(tmp_path / "work") not in status and "descry-work" not in status
    empty = make_zip(tmp_path / "empty.zip", {"frogs/readme.txt": b"no images"})
    status = evaluate_tab.evaluate_upload(models, settings, None, {"path": str(empty)}, None, FROGS, None).message
    assert "empty.zip" in status and "no images found" in status and str(tmp_path) not in status


# --- shareable state ---------------------------------------------------------------------------------------------


def test_a_link_carries_classes_descriptors_and_an_example_image(tmp_path):
    descriptors = {
        "tabby cat": ["striped fur"],
        "lynx": ["tufted ears", "a <b>short</b> tail"],
        "unlisted": ["left out"],
    }
    token = sharing.encode_state("tabby cat, lynx", descriptors, str(examples.FIRST_EXAMPLE))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token) and len(token) < 300
    classes, restored, image = sharing.decode_state(token)
    assert classes == "tabby cat, lynx" and restored == {
        "tabby cat": ["striped fur"],
        "lynx": ["tufted ears", "a <b>short</b> tail"],
    }
    assert image == str(examples.FIRST_EXAMPLE)
    # An upload travels without its image, even if it shares an example's name.
    lookalike = tmp_path / "tabby-cat.jpg"
    random_image(3).save(lookalike)
    assert sharing.decode_state(sharing.encode_state("tabby cat", descriptors, str(lookalike)))[2] is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-real-state", "damaged"),
        ("A" * 7000, "7,000 characters long; the limit is 6,000"),
    ],
)
def test_bad_links_are_one_line(token, message):
    with pytest.raises(DescriptorError, match=message):
        sharing.decode_state(token)


def test_hostile_link_contents_are_refused():
    import base64
    import zlib

    def pack(payload: bytes) -> str:
        return base64.urlsafe_b64encode(zlib.compress(payload, 9)).decode().rstrip("=")

    with pytest.raises(DescriptorError, match="unpacks to more than 256 KB"):
        sharing.decode_state(pack(b" " * 1_000_000))  # a zip bomb: tiny link, huge state
    with pytest.raises(DescriptorError, match="not a Descry explanation"):
        sharing.decode_state(pack(b'{"c": 3, "d": {}}'))
    with pytest.raises(DescriptorError, match="nested too deeply"):
        sharing.decode_state(pack(b"[" * 100_000))
    too_many = json.dumps({"c": "newt", "d": {"newt": [f"f{i}" for i in range(100)]}}).encode()
    with pytest.raises(DescriptorError, match="the app takes at most 64 per class"):
        sharing.decode_state(pack(too_many))


def test_a_set_too_large_for_a_link_says_so():
    import random

    rng = random.Random(0)
    huge = {f"class {i}": [f"{rng.getrandbits(160):040x}" for _ in range(20)] for i in range(60)}
    with pytest.raises(DescriptorError, match="too large for a link"):
        sharing.encode_state(", ".join(huge), huge)


def test_evaluation_outputs_start_hidden(models):
    blocks = build_app(models)
    config = blocks.get_config_file()
    hidden = {c["props"].get("label"): c["props"].get("visible") for c in config["components"]}
    assert hidden["report.html (self-contained)"] is False and hidden["Metrics"] is False and hidden["View"] is False


def test_long_encodes_report_progress_in_the_page(models, image_file):
    shown = []

    def progress(value, desc=None):
        shown.append((value, desc))

    many = {f"class {i}": [f"feature {j} of class {i}" for j in range(5)] for i in range(60)}
    message = explain_image(models, image_file, ", ".join(many), many, scoring.progress_for(progress)).message
    assert message == "" and shown[0] == ((0, 360), "Encoding 360 new prompts (cached for next time)")
    assert shown[-1][0] == (360, 360)
    shown.clear()
    explain_image(models, image_file, "tree frog, tailed frog", FROGS, scoring.progress_for(progress))
    assert shown == []  # a handful of prompts: no progress display


def test_models_side_by_side(clip_dir, siglip_dir, image_file):
    models = ExplainerPool([str(clip_dir), str(siglip_dir)], device="cpu")
    html_out, figure, message = compare.compare_models(
        models, LIMITS, models.names, image_file, "tree frog, tailed frog, bullfrog", FROGS
    )
    figure = figure.figure()
    assert message == "" and html_out.count('class="descry-model"') == 2
    for name in models.names:
        assert messages.short_name(name) in html_out
    assert [trace.name for trace in figure.data] == [messages.short_name(n) for n in models.names]  # as headed
    assert len(figure.data[0].x) == 10  # the ten descriptors they disagree on most
    spreads = [abs(a - b) for a, b in zip(figure.data[0].x, figure.data[1].x, strict=True)]
    assert spreads[0] == max(spreads) and figure.data[0].y[0] == max(figure.data[0].y)  # the largest on top
    assert (
        "Pick two or more"
        in compare.compare_models(models, LIMITS, models.names[:1], image_file, "tree frog", FROGS)[2]
    )


def test_the_heatmap_of_a_descriptor_in_the_page(models, image_file, siglip_dir):
    classes = "tree frog, tailed frog, bullfrog"
    record = explain_image(models, image_file, classes, FROGS).record
    choices = heatmaps.heatmap_choices(record)
    top = record["predictions"][0]
    assert choices[0] == f"{top['class']} · {top['descriptors'][0]['descriptor']}"
    assert heatmaps.kept_choice(choices, choices[2]) == choices[2] and heatmaps.kept_choice(choices, "x") == choices[0]
    picture, caption = heatmaps.descriptor_heatmap(models, LIMITS, None, image_file, classes, FROGS, choices[0])
    assert picture.size == (64, 48 + 28) and "the same units as its bar" in caption
    _, bare = heatmaps.descriptor_heatmap(models, LIMITS, None, image_file, classes, FROGS, choices[0], alone=True)
    assert f"Prompt: “{top['descriptors'][0]['descriptor']}”" in bare
    _, gone = heatmaps.descriptor_heatmap(models, LIMITS, None, image_file, classes, FROGS, f"{top['class']} · gone")
    assert gone == "That descriptor is no longer in the list; pick another."
    assert "Method: ClearCLIP" in caption and "Greyed: outside the centre square" in caption
    # A SigLIP's map in the page: its own recipe named, and the whole image covered (no crop).
    siglip_models = ExplainerPool([str(siglip_dir)], device="cpu")
    picture, caption = heatmaps.descriptor_heatmap(
        siglip_models, LIMITS, None, image_file, "tree frog", FROGS, f"tree frog · {FROGS['tree frog'][0]}"
    )
    assert picture is not None and "MaskCLIP" in caption and "siglip tower" in caption
    assert "The grid covers the whole image." in caption


def test_a_maps_caption_says_its_units_and_how_faithful_it_is(image_file, tmp_path):
    """The gradient fallback's map is a share of the score, not the bar, and its caption says so; the
    faithfulness switch adds the deletion and insertion ratios for the chosen map only."""
    from tests.tiny_models import save_tiny_open_clip

    pool = ExplainerPool([str(save_tiny_open_clip(tmp_path / "timm", "timm"))], device="cpu")
    choice = f"tree frog · {FROGS['tree frog'][0]}"
    picture, caption = heatmaps.descriptor_heatmap(pool, LIMITS, None, image_file, "tree frog", FROGS, choice)
    assert picture is not None and "each location's share of its score" in caption
    assert "in logits without the bias" in caption and "the same units as its bar" not in caption
    assert "gradient × activation" in caption and "TimmModel VisionTransformer tower" in caption
    assert "Faithfulness" not in caption
    _, checked = heatmaps.descriptor_heatmap(
        pool, LIMITS, None, image_file, "tree frog", FROGS, choice, faithfulness=True
    )
    assert re.search(r"Faithfulness: deletion ratio -?\d+\.\d\d .* insertion ratio -?\d+\.\d\d", checked)
    assert "8 steps against 3 random orders" in checked


def test_the_faithfulness_caption_reads_its_verdict():
    found = {"steps": 8, "seeds": 3, "seconds": 1.25}
    assert "found what drives" in heatmaps.faithfulness_words({**found, "deletion_ratio": 0.5, "insertion_ratio": 2})
    assert "no better than random" in heatmaps.faithfulness_words(
        {**found, "deletion_ratio": 1.4, "insertion_ratio": 0.7}
    )
    assert "mixed" in heatmaps.faithfulness_words({**found, "deletion_ratio": 0.7, "insertion_ratio": 0.9})
    assert "not measurable" in heatmaps.faithfulness_words({**found, "deletion_ratio": None, "insertion_ratio": 1})
    assert heatmaps.faithfulness_words(None) == ""


def test_tell_apart_needs_an_llm_and_scores_the_pairs(models, image_file, no_llm):
    classes = "tree frog, tailed frog"
    record = explain_image(models, image_file, classes, FROGS).record
    no_llm_yet = llm_gate.app_llm(Settings())
    figure, pending, message = tell_apart.tell_apart(models, LIMITS, None, image_file, classes, FROGS, no_llm_yet)
    assert figure is None and pending is None and "No LLM is configured" in message
    with FakeLLM(default=lambda name: answer("- protruding eyes | tiny eyes\n- bright green | olive brown")) as server:
        figure, pending, message = tell_apart.tell_apart(
            models, LIMITS, None, image_file, classes, FROGS, llm_for(server)
        )
    figure = figure.figure()
    a, b = record["predictions"][0]["class"], record["predictions"][1]["class"]
    assert pending == {"a": a, "b": b, "pairs": [["protruding eyes", "tiny eyes"], ["bright green", "olive brown"]]}
    assert "2 pairs of features" in message and len(figure.data) == 2 and len(figure.data[0].x) == 2
    merged, note = tell_apart.add_pairs(FROGS, pending)
    new_a = [x for x in ("protruding eyes", "bright green") if x not in FROGS[a]]
    assert merged[a] == FROGS[a] + new_a and merged[b] == FROGS[b] + ["tiny eyes", "olive brown"]
    assert f"Added {len(new_a) + 2} descriptors" in note
    reference = np.mean([d["score"] for p in record["predictions"] for d in p["descriptors"]])
    assert figure.data[0].x[0] == pytest.approx(
        scored_pair_score(models, image_file, a, "protruding eyes") - reference, abs=1e-4
    )


def scored_pair_score(models, image_file, class_name, feature):
    return models.get().classify(image_file, {class_name: [feature]}).predictions[0].descriptors[0].score


# --- what a scoring sends to the page --------------------------------------------------------------------------


def test_an_error_keeps_the_last_explanation_marked_stale(models, image_file):
    good = explain_image(models, image_file, "tree frog, tailed frog", FROGS)
    ranking, descriptors, contrast, headline, record, stale, message, picker = scoring.updates(good, None, None)
    assert ranking["visible"] and descriptors["visible"] and contrast["visible"] and record == good.record
    assert stale == "" and message == "" and picker["value"] == picker["choices"][0]
    # The same choices again: the picker is left alone (nothing is sent).
    assert isinstance(scoring.updates(good, good.record, picker["value"])[7], type(gr.skip()))
    bad = explain_image(models, image_file, "tree frog, Tree_Frog", FROGS)
    sent = scoring.updates(bad, good.record, None)
    assert all(isinstance(update, type(gr.skip())) for update in (*sent[:5], sent[7]))  # charts and headline stay
    assert "still show the last explanation that worked" in sent[5] and "listed twice" in sent[6]
    assert scoring.updates(bad, None, None)[5] == ""  # nothing shown before: nothing to call stale


def test_with_no_image_the_charts_are_hidden_not_left_on_another_picture(models):
    sent = scoring.updates(explain_image(models, None, "tree frog", FROGS), {"predictions": []}, None)
    assert [update["visible"] for update in sent[:3]] == [False, False, False] and sent[3] == "" and sent[4] is None
    assert "Upload an image" in sent[6]


def test_an_unloadable_model_hides_the_charts_behind_one_panel(image_file):
    shown = explain_image(ExplainerPool(["no-such-org/no-such-model"], device="cpu"), image_file, "newt", {})
    sent = scoring.updates(shown, None, None)
    assert [update["visible"] for update in sent[:3]] == [False, False, False]
    assert "The model could not be loaded" in sent[3] and sent[6] == ""


def test_the_picker_marks_classes_without_features():
    choices = editor.picker_choices(["newt", "Axolotl", "toad"], {"newt": ["a crest"], "axolotl": [" "]})
    assert choices == [("newt", "newt"), ("Axolotl (no features)", "Axolotl"), ("toad (no features)", "toad")]


def test_reopening_restores_an_example_and_says_when_an_image_was_not_kept():
    saved = {"classes": "espresso, cappuccino", "descriptors": {"espresso": ["crema"]}, "example": "espresso"}
    restored = sharing.restore("", saved, {}, LIMITS)
    assert restored.image == str(examples.ASSETS / "examples" / "espresso.jpg") and restored.message is None
    assert restored.classes == "espresso, cappuccino" and restored.descriptors == {"espresso": ["crema"]}
    uploaded = sharing.restore("", {**saved, "example": None}, {}, LIMITS)
    assert uploaded.image == "" and "not the image" in uploaded.message  # no explanation of the wrong picture
    link = sharing.encode_state("espresso", {"espresso": ["crema"]}, None)
    opened = sharing.restore(link, None, {}, LIMITS)
    assert opened.image == "" and "holds no image" in opened.message and opened.classes == "espresso"
    with_example = sharing.encode_state("espresso", {"espresso": ["crema"]}, str(examples.EXAMPLES[1]))
    assert sharing.restore(with_example, None, {}, LIMITS).image == str(examples.EXAMPLES[1])
    assert sharing.restore("", {"classes": 3}, {}, LIMITS) == sharing.Restored()  # damaged: quietly forgotten


def test_kept_work_is_encrypted_with_a_key_that_survives_a_restart(tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.setenv("DESCRY_CACHE_DIR", str(tmp_path / "cache"))
    first = sharing.browser_secret(Settings())
    assert len(first) >= 40 and sharing.browser_secret(Settings()) == first  # made once, then read back
    key = tmp_path / "cache" / "browser-state.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600  # readable by the app's owner only
    assert sharing.browser_secret(Settings(state_secret="from-the-environment")) == "from-the-environment"
    assert Settings.from_environment({"DESCRY_STATE_SECRET": "s"}).state_secret == "s"


def test_editing_a_third_class_does_not_resend_the_contrast(models, image_file):
    classes = "tree frog, tailed frog, bullfrog"
    first = explain_image(models, image_file, classes, FROGS)
    third = first.record["predictions"][2]["class"]
    edited = editor.edit_features(FROGS, third, "a new feature\n" + "\n".join(FROGS[third]))
    again = explain_image(models, image_file, classes, edited)
    assert again.record["predictions"][2]["class"] == third  # still third: the top two are as they were
    assert isinstance(scoring.updates(again, first.record, None)[2], type(gr.skip()))
    top = first.record["predictions"][0]["class"]
    changed = explain_image(models, image_file, classes, editor.edit_features(FROGS, top, "something else"))
    assert changed.contrast is not None and scoring.updates(changed, first.record, None)[2]["visible"]


def test_a_close_call_reads_unsure_between_the_two_not_a_bold_winner(models, image_file):
    from explain.confidence import Abstention, Decision

    close = Decision(Abstention(min_margin=1e9))
    shown = scoring.explain_image(models, LIMITS, None, image_file, "tree frog, tailed frog", FROGS, decision=close)
    first, second = [entry["class"] for entry in shown.record["predictions"][:2]]
    assert f"unsure between {first} and {second}" in shown.headline
    assert "descry-unsure" in shown.headline and "descry-answer" not in shown.headline
    assert "margin" in shown.headline and shown.record["abstained"] and shown.record["label"] is None
    assert "the template alone says " in shown.headline  # never "agrees": there is no winner to agree with
    clear = scoring.explain_image(models, LIMITS, None, image_file, "tree frog, tailed frog", FROGS)
    assert "descry-answer" in clear.headline and not clear.record["abstained"]


def test_the_owner_sets_the_threshold_and_calibration_in_one_line_each(tmp_path):
    from web.settings import SettingsError

    assert Settings.from_environment({}).min_margin == 0.5  # the app's default: a lead under half a logit
    assert Settings.from_environment({"DESCRY_MIN_MARGIN": "0"}).min_margin == 0.0
    with pytest.raises(SettingsError, match="DESCRY_MIN_PROBABILITY='2' must be from 0 to 1"):
        Settings.from_environment({"DESCRY_MIN_PROBABILITY": "2"})
    with pytest.raises(SettingsError, match="DESCRY_CALIBRATION=.* is not a file"):
        Settings.from_environment({"DESCRY_CALIBRATION": str(tmp_path / "missing.json")})
