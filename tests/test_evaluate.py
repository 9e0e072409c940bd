"""Dataset evaluation: metrics by hand and against sklearn, class matching, diagnostics, views, outputs."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, top_k_accuracy_score

from descriptors import DescriptorError, build_prompts
from explain import EmbeddingStore, Explainer, load_model
from explain.cli import main
from explain.evaluate import (
    MethodScores,
    dataset_name_forms,
    descriptor_diagnostics,
    load_dataset,
    match_classes,
    run_evaluation,
    views,
    waffle_descriptors,
)
from explain.metrics import classification_metrics, expected_calibration_error
from explain.scoring import class_scores

CHROMIUM = "/usr/bin/chromium"


# --- metrics -------------------------------------------------------------------------------------------------


def test_metrics_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]))
    targets = np.array([0, 1, 1, 0])
    m = classification_metrics(logits, targets, ["a", "b", "c"])
    assert m["acc1"] == 0.5  # samples 0 and 1
    assert m["acc5"] == 1.0  # k is capped at the number of classes
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["c"]["support"] == 0
    assert m["mean_per_class_recall"] == 0.5  # classes without samples are left out of the mean
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert m["mean_confidence"] == pytest.approx((0.7 + 0.6 + 0.5 + 0.6) / 4)


def test_ece_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    # Two occupied bins of two samples: |0.5 - 0.95| and |1.0 - 0.55|, each weighted 1/2.
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert expected_calibration_error(np.array([1.0]), np.array([True])) == 0.0


def test_metrics_agree_with_sklearn_on_random_logits():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(500, 12))
    targets = rng.integers(0, 12, size=500)
    m = classification_metrics(logits, targets, [f"c{i}" for i in range(12)])
    assert m["acc1"] == pytest.approx(accuracy_score(targets, logits.argmax(1)))
    assert m["acc5"] == pytest.approx(top_k_accuracy_score(targets, logits, k=5, labels=range(12)))
    assert m["mean_per_class_recall"] == pytest.approx(balanced_accuracy_score(targets, logits.argmax(1)))


# --- class matching, random descriptors --------------------------------------------------------------------


def test_classes_match_by_name_not_position():
    descriptors = {"tailed frog": ["a tail"], "Tree Frog": ["toe pads"], "bonsai": ["a small tree"]}
    matched, missing = match_classes(["tree_frog", "015.bonsai-101", "tailed-frog", "axolotl"], descriptors)
    assert matched == {"tree_frog": ["toe pads"], "015.bonsai-101": ["a small tree"], "tailed-frog": ["a tail"], "axolotl": []}
    assert missing == ["axolotl"]
    with pytest.raises(DescriptorError, match="1 dataset classes have no descriptors: axolotl"):
        match_classes(["axolotl", "bonsai"], descriptors, strict=True)
    assert dataset_name_forms("252.car-side-101") == ["252.car-side-101", "car-side", "car side"]


def test_waffle_keeps_counts_and_is_seeded():
    descriptors = {"newt": ["a", "b", "c"], "toad": ["d"], "frog": []}
    first, again, other = (waffle_descriptors(descriptors, s) for s in (1, 1, 2))
    assert {k: len(v) for k, v in first.items()} == {"newt": 3, "toad": 1, "frog": 0}  # frog keeps its template
    assert first == again and first != other
    assert len(first["newt"][0].split()) == 2 and first["newt"][1].isalpha() and " " not in first["newt"][1]


# --- diagnostics and views, by hand ---------------------------------------------------------------------------


def test_ablation_and_top_descriptor_by_hand():
    plan = build_prompts({"A": ["a1", "a2"], "B": ["b1"]})
    per_prompt = np.array([[10.0, 2.0, 5.0], [1.0, 9.0, 6.0], [5.0, 1.0, 4.0]])  # columns a1, a2, b1
    logits = class_scores(per_prompt, plan.counts)  # A: 6, 5, 3; B: 5, 6, 4
    targets = np.array([0, 0, 1])  # predictions A, B, B: two right
    baseline = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 9.0]])
    rows = descriptor_diagnostics(MethodScores(logits, plan, per_prompt), targets, baseline)
    by_descriptor = {r["descriptor"]: r for r in rows}
    # Without a1, A is a2 alone (2, 9, 1): sample 0 turns wrong, sample 1 turns right: still 2/3.
    assert by_descriptor["a1"]["ablation_delta"] == pytest.approx(0.0)
    # Without a2, A is a1 alone (10, 1, 5): sample 2 turns to A, wrongly: 1/3.
    assert by_descriptor["a2"]["ablation_delta"] == pytest.approx(-1 / 3)
    # Without b1, B falls back to its template score (0, 1, 9): sample 1 turns right: 3/3.
    assert by_descriptor["b1"]["ablation_delta"] == pytest.approx(1 / 3)
    assert [(r["descriptor"], r["top_in_correct"], r["correct_predictions"]) for r in rows] == [("a1", 1, 1), ("a2", 0, 1), ("b1", 1, 1)]


def test_views_by_hand():
    targets = np.array([0, 1, 2, 0])
    predictions = {"A": np.array([0, 1, 0, 1]), "B": np.array([0, 0, 2, 1])}
    baseline = {"A": np.array([1, 1, 2, 0]), "B": np.array([0, 0, 2, 1])}
    found = views(predictions, targets, baseline)
    assert found["A right, B wrong"] == [1]
    assert found["B right, A wrong"] == [2]
    assert found["every model wrong"] == [3]
    assert found["exactly one model right"] == [1, 2]
    assert found["A: descriptors right, baseline wrong"] == [0]
    assert found["A: baseline right, descriptors wrong"] == [2, 3]
    assert found["B: descriptors right, baseline wrong"] == []


# --- datasets on disk -----------------------------------------------------------------------------------------

COLOURS = {"tree_frog": (40, 180, 60), "Tailed-Frog": (120, 90, 60), "axolotl": (230, 160, 180)}
DESCRIPTORS = {"tree frog": ["bright green colour", "protruding eyes"], "tailed frog": ["a flattened, brownish body"]}


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(rng.normal(colour, 30, size=(40, 52, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    (root / "notes.txt").write_text("not a class folder")
    return root


@pytest.fixture
def descriptor_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(DESCRIPTORS))
    return path


def test_load_image_folder_and_csv(image_folder, tmp_path):
    folder = load_dataset(image_folder)
    assert folder.classes == ["Tailed-Frog", "axolotl", "tree_frog"] and len(folder.paths) == 12
    table = tmp_path / "data.csv"
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{label}" for p, label in zip(folder.paths, folder.labels)]
    table.write_text("\n".join(rows))
    from_csv = load_dataset(table)
    assert [p.resolve() for p in from_csv.paths] == [p.resolve() for p in folder.paths] and from_csv.labels == folder.labels
    limited = load_dataset(image_folder, limit=5, seed=3)
    assert len(limited.paths) == 5 and limited.paths == load_dataset(image_folder, limit=5, seed=3).paths
    assert limited.paths != load_dataset(image_folder, limit=5, seed=4).paths


def test_bad_datasets(tmp_path):
    from explain import ExplainError

    with pytest.raises(ExplainError, match="no such dataset"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ExplainError, match="no images found"):
        load_dataset(tmp_path / "empty")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nonly-a-path\n")
    with pytest.raises(ExplainError, match="row 1 is not 'path,label'"):
        load_dataset(bad)


def test_evaluate_cli_writes_every_output(capsys, clip_dir, siglip_dir, image_folder, descriptor_file, tmp_path):
    (image_folder / "axolotl" / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        ["evaluate", str(image_folder), "--descriptors", str(descriptor_file), "--model", str(clip_dir), "--model", str(siglip_dir),
         "--out", str(out), "--workers", "0", "--batch-size", "5"]
    )  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert code == 1  # one unreadable image, reported; the rest evaluated
    assert "warning: dataset class 'axolotl' has no descriptors; scored with the template" in stderr
    assert "broken.jpg: not a recognised image format" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [str(clip_dir), str(siglip_dir)]
    assert list(metrics[str(clip_dir)]) == ["descriptors", "baseline", "waffle"]
    for key in ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece", "per_class", "confusion_matrix"):
        assert key in metrics[str(clip_dir)]["descriptors"]
    assert metrics[str(clip_dir)]["descriptors"]["n_samples"] == 12
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "model", "method", "pred", "confidence", "top5"]
    assert len(rows) == 2 * 3 * 12
    assert all(len(r["top5"].split("|")) == 3 for r in rows)  # three classes: top-5 holds them all
    view_names = json.loads((out / "views.json").read_text())
    assert f"{clip_dir} right, {siglip_dir} wrong" in view_names and "every model wrong" in view_names
    assert (out / "report.html").stat().st_size > 1_000_000  # plotly.js is inlined: the file stands alone
    assert "<script src=" not in (out / "report.html").read_text()


def test_cached_rerun_encodes_no_image(clip_dir, image_folder, tmp_path):
    store = EmbeddingStore(tmp_path / "cache.sqlite3")
    dataset = load_dataset(image_folder)
    first = Explainer(load_model(str(clip_dir), "cpu"), store=store)
    run_evaluation(dataset, DESCRIPTORS, {"m": first}, "a photo of a {}.", store, workers=0)
    assert first.images_encoded == 12
    again = Explainer(load_model(str(clip_dir), "cpu"), store=store)
    edited = {**DESCRIPTORS, "tree frog": ["webbed toes", "protruding eyes"]}
    run = run_evaluation(dataset, edited, {"m": again}, "a photo of a {}.", store, workers=0)
    assert again.images_encoded == 0 and again.texts_encoded == 1  # only the edited descriptor's prompt
    assert run.metrics["m"]["descriptors"]["n_samples"] == 12


def test_evaluation_scores_equal_classify(clip, image_folder):
    dataset = load_dataset(image_folder)
    explainer = Explainer(clip)
    run = run_evaluation(dataset, DESCRIPTORS, {"m": explainer}, "a photo of a {}.", None, batch_size=5, workers=2)
    logits = run.evaluations["m"].methods["descriptors"].logits
    matched, _ = match_classes(dataset.classes, DESCRIPTORS)
    single = explainer.classify(dataset.paths[0], matched)
    by_name = {p.name: p.score for p in single.predictions}
    assert [by_name[c] for c in dataset.classes] == pytest.approx(list(logits[0]), abs=1e-4)


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Chromium is not installed")
def test_report_opens_in_chromium_without_console_errors(clip_dir, image_folder, descriptor_file, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    assert main(["evaluate", str(image_folder), "--descriptors", str(descriptor_file), "--model", str(clip_dir), "--out", str(out), "--workers", "0"]) == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page.wait_for_timeout(1000)
        assert errors == []
        assert page.locator(".plotly-graph-div").count() == 2
        assert page.locator("figure img").count() > 0
        browser.close()
