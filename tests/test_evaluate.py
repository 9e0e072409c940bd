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
from descriptors.names import match_classes, match_key
from explain import EmbeddingStore, Explainer, load_model
from explain.cli import main
from explain.datasets import load_dataset
from explain.evaluate import MethodScores, PromptRecipe, descriptor_diagnostics, run_evaluation, views
from explain.metrics import classification_metrics, expected_calibration_error
from explain.scoring import class_scores

CHROMIUM = "/usr/bin/chromium"


# --- metrics -------------------------------------------------------------------------------------------------


def test_metrics_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]))
    targets = np.array([0, 1, 1, 0])
    m = classification_metrics(logits, targets, ["a", "b", "c"])
    assert m["acc1"] == 0.5  # samples 0 and 1
    assert np.isnan(m["acc5"])  # fewer than five classes: undefined, as CLIP_benchmark reports it
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
    match = match_classes(["tree_frog", "015.bonsai-101", "tailed-frog", "axolotl"], descriptors)
    assert match.descriptors == {
        "tree_frog": ["toe pads"],
        "015.bonsai-101": ["a small tree"],
        "tailed-frog": ["a tail"],
        "axolotl": [],
    }
    assert match.labels == {
        "tree_frog": "Tree Frog",
        "015.bonsai-101": "bonsai",
        "tailed-frog": "tailed frog",
        "axolotl": "axolotl",
    }
    assert match.missing == ["axolotl"]
    with pytest.raises(DescriptorError, match="1 dataset classes have no descriptors: axolotl"):
        match_classes(["axolotl", "bonsai"], descriptors, strict=True)
    assert match_key("252.car-side-101") == "car side"
    assert match_key("001.Black_footed_Albatross") == match_key("Black-footed Albatross") == "black footed albatross"


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
    assert [(r["descriptor"], r["top_in_correct"], r["correct_predictions"]) for r in rows] == [
        ("a1", 1, 1),
        ("a2", 0, 1),
        ("b1", 1, 1),
    ]


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
    rows = ["path,label"] + [
        f"{p.relative_to(tmp_path)},{label}" for p, label in zip(folder.paths, folder.labels, strict=True)
    ]
    table.write_text("\n".join(rows))
    from_csv = load_dataset(table)
    assert [p.resolve() for p in from_csv.paths] == [
        p.resolve() for p in folder.paths
    ] and from_csv.labels == folder.labels
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
        [
            "evaluate",
            str(image_folder),
            "--descriptors",
            str(descriptor_file),
            "--model",
            str(clip_dir),
            "--model",
            str(siglip_dir),
            "--out",
            str(out),
            "--workers",
            "0",
            "--batch-size",
            "5",
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert code == 1  # one unreadable image, reported; the rest evaluated
    assert "warning: dataset class 'axolotl' has no descriptors; scored with the template" in stderr
    assert "broken.jpg: not a recognised image format" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == [str(clip_dir), str(siglip_dir)]
    assert list(metrics[str(clip_dir)]) == ["descriptors", "baseline", "waffle", "waffle_reps"]
    for key in ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece", "per_class", "confusion_matrix"):
        assert key in metrics[str(clip_dir)]["descriptors"]
    assert metrics[str(clip_dir)]["descriptors"]["n_samples"] == 12
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "model", "method", "pred", "confidence", "top5"]
    assert len(rows) == 2 * 3 * 12
    assert all(len(r["top5"].split("|")) == 3 for r in rows)  # three classes: top-5 holds them all
    assert metrics[str(clip_dir)]["descriptors"]["acc5"] is None  # fewer than five classes
    assert "acc5 n/a" in stdout
    view_names = json.loads((out / "views.json").read_text())
    assert f"{clip_dir} right, {siglip_dir} wrong" in view_names and "every model wrong" in view_names
    assert (out / "report.html").stat().st_size > 1_000_000  # plotly.js is inlined: the file stands alone
    assert "<script src=" not in (out / "report.html").read_text()


def test_cached_rerun_encodes_no_image(clip_dir, image_folder, tmp_path):
    store = EmbeddingStore(tmp_path / "cache.sqlite3")
    dataset = load_dataset(image_folder)
    first = Explainer(load_model(str(clip_dir), "cpu"), store=store)
    run_evaluation(dataset, DESCRIPTORS, {"m": first}, PromptRecipe(), store, workers=0)
    assert first.images_encoded == 12
    again = Explainer(load_model(str(clip_dir), "cpu"), store=store)
    # The edit keeps the descriptors' set of characters, which WaffleCLIP's random strings are drawn from,
    # so the control draws the same prompts again.
    edited = {**DESCRIPTORS, "tree frog": ["bright green colours", "protruding eyes"]}
    run = run_evaluation(dataset, edited, {"m": again}, PromptRecipe(), store, workers=0)
    assert again.images_encoded == 0 and again.texts_encoded == 1  # only the edited descriptor's prompt
    assert run.metrics["m"]["descriptors"]["n_samples"] == 12


def test_evaluation_scores_equal_classify(clip, image_folder):
    dataset = load_dataset(image_folder)
    explainer = Explainer(clip)
    run = run_evaluation(dataset, DESCRIPTORS, {"m": explainer}, PromptRecipe(), None, batch_size=5, workers=2)
    logits = run.evaluations["m"].methods["descriptors"].logits
    # Classify by the names the prompts use: the descriptor keys, or a readable name.
    match = match_classes(dataset.classes, DESCRIPTORS)
    single = explainer.classify(dataset.paths[0], {match.labels[c]: match.descriptors[c] for c in dataset.classes})
    by_name = {p.name: p.score for p in single.predictions}
    assert [by_name[match.labels[c]] for c in dataset.classes] == pytest.approx(list(logits[0]), abs=1e-4)


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Chromium is not installed")
def test_report_opens_in_chromium_without_console_errors(clip_dir, image_folder, descriptor_file, tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                str(image_folder),
                "--descriptors",
                str(descriptor_file),
                "--model",
                str(clip_dir),
                "--out",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page.wait_for_timeout(1000)
        assert errors == []
        assert page.locator(".plotly-graph-div").count() == 4  # confusion, recall, reliability, risk-coverage
        assert page.locator("figure img").count() > 0
        browser.close()


# --- prompts on real dataset layouts, the control, ties -----------------------------------------------------


def _folder(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(1)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, size=(24, 30, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


@pytest.mark.parametrize(
    ("folders", "descriptors", "expected_labels"),
    [
        (  # Caltech-256: numbered folders, "-101" duplicates, hyphens between words
            ["015.bonsai-101", "046.computer-keyboard", "232.t-shirt", "257.clutter"],
            {
                "bonsai": ["a miniature tree", "a shallow pot"],
                "computer keyboard": ["rows of keys"],
                "t-shirt": ["short sleeves"],
            },
            {
                "015.bonsai-101": "bonsai",
                "046.computer-keyboard": "computer keyboard",
                "232.t-shirt": "t-shirt",
                "257.clutter": "clutter",
            },
        ),
        (  # CUB-200: numbered folders with underscores; the DCLIP release's keys have hyphens and spaces
            ["001.Black_footed_Albatross", "002.Laysan_Albatross", "009.Brewer_Blackbird", "200.Common_Yellowthroat"],
            {
                "Black-footed Albatross": ["dark brown plumage"],
                "Laysan Albatross": ["a white head"],
                "Brewer Blackbird": ["glossy black"],
            },
            {
                "001.Black_footed_Albatross": "Black-footed Albatross",
                "002.Laysan_Albatross": "Laysan Albatross",
                "009.Brewer_Blackbird": "Brewer Blackbird",
                "200.Common_Yellowthroat": "Common Yellowthroat",
            },
        ),
    ],
)
def test_prompts_use_descriptor_keys_never_folder_names(
    clip_dir, tmp_path, capsys, folders, descriptors, expected_labels
):
    data = _folder(tmp_path / "data", folders)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(descriptors))
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate",
                str(data),
                "--descriptors",
                str(path),
                "--model",
                str(clip_dir),
                "--out",
                str(out),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    assert capsys.readouterr().err.count("has no descriptors") == 1  # only the last folder lacks descriptors
    with open(out / "prompts.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["method", "class", "descriptor", "prompt"]
    assert {r["method"] for r in rows} == {"descriptors", "baseline", "waffle"}
    assert len([r for r in rows if r["method"] == "waffle"]) == 4 * 30  # 15 pairs, every class
    for row in rows:
        label = expected_labels[row["class"]]
        assert label in row["prompt"]
        assert row["class"] not in row["prompt"] and "-101" not in row["prompt"]
        assert not any(char.isdigit() for char in row["prompt"].replace(row["descriptor"], ""))
    baseline = {r["class"]: r["prompt"] for r in rows if r["method"] == "baseline"}
    assert baseline == {name: f"a photo of a {label}." for name, label in expected_labels.items()}


def test_ambiguous_matches_are_errors_naming_both():
    with pytest.raises(DescriptorError, match="'tree-frog' and 'tree_frog' both match descriptor key 'tree frog'"):
        match_classes(["tree-frog", "tree_frog"], {"tree frog": ["toe pads"]})
    with pytest.raises(DescriptorError, match="'001.newt' and '002.newt' both match the name 'newt'"):
        match_classes(["001.newt", "002.newt"], {})
    with pytest.raises(DescriptorError, match="matches more than one descriptor key: 'tree-frog' and 'tree frog'"):
        match_classes(["001.Tree_Frog"], {"tree-frog": ["a"], "tree frog": ["b"]})
    # An exact match (case and underscores aside) wins over a loose one.
    assert match_classes(["tree_frog"], {"tree-frog": ["a"], "tree frog": ["b"]}).labels == {"tree_frog": "tree frog"}


def test_ties_go_to_the_lower_class_everywhere():
    from explain.metrics import top_k

    logits = np.array([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    assert top_k(logits, 5).tolist() == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]]
    m = classification_metrics(logits, np.array([1, 0]), list("abcde"))
    assert m["acc1"] == 1.0 and m["confusion_matrix"][1][1] == 1 and m["confusion_matrix"][0][0] == 1
    m = classification_metrics(logits, np.array([2, 4]), list("abcde"))
    assert m["acc1"] == 0.0 and m["acc5"] == 1.0


def test_waffle_repetitions_mean_and_spread(clip, tmp_path):
    data = _folder(tmp_path / "data", ["newt", "toad", "frog"])
    descriptors = {"newt": ["a long tail"], "toad": ["warty skin"], "frog": ["smooth skin"]}
    run = run_evaluation(
        load_dataset(data),
        descriptors,
        {"m": Explainer(clip)},
        PromptRecipe(waffle_pairs=3, waffle_reps=3, seed=4),
        None,
        workers=0,
    )
    metrics = run.metrics["m"]
    reps = metrics["waffle_reps"]
    assert [r["seed"] for r in reps] == [4, 5, 6] and metrics["waffle"]["seeds"] == [4, 5, 6]
    assert metrics["waffle"]["acc1"] == pytest.approx(np.mean([r["acc1"] for r in reps]))
    assert metrics["waffle"]["std"]["acc1"] == pytest.approx(np.std([r["acc1"] for r in reps]))
    evaluation = run.evaluations["m"]
    assert [s.seed for s in evaluation.waffle_reps] == [4, 5, 6]
    assert all(s.plan.counts == (6, 6, 6) for s in evaluation.waffle_reps)
    from explain.evaluate import method_runs

    assert [name for name, _ in method_runs(evaluation)] == [
        "descriptors",
        "baseline",
        "waffle-seed4",
        "waffle-seed5",
        "waffle-seed6",
    ]
