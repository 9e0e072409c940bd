"""Descry in real FiftyOne: apply_model, its fields, heatmaps, the export's import, evaluate_classifications.

These run against FiftyOne itself (requirements-fiftyone.txt; CI installs
it), with its database in a temporary folder, so that a change in
FiftyOne's formats fails this build rather than a user's afternoon. They
are skipped where FiftyOne is not installed.
"""

import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest

# FiftyOne reads its configuration when imported: its database and settings go to a folder of this run.
_HOME = tempfile.mkdtemp(prefix="descry-fiftyone-")
os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(Path(_HOME) / "db"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

if os.environ.get("DESCRY_REQUIRE_FIFTYONE"):  # CI sets this: a failed install must fail, not skip
    import fiftyone as fo
else:
    fo = pytest.importorskip("fiftyone")

from explain.cli import main  # noqa: E402
from explain.errors import HeatmapsUnavailable  # noqa: E402
from explain.fiftyone_model import DescryModel, heatmap_canvas, load_labels  # noqa: E402
from tests.conftest import FROGS, random_image  # noqa: E402

FOLDERS = {"tree frog": "tree_frog", "tailed frog": "Tailed_Frog", "bullfrog": "bullfrog"}


@pytest.fixture
def tree(tmp_path):
    """A folder tree whose folder names differ from the descriptor keys, with one unreadable file."""
    root = tmp_path / "frogs"
    for k, folder in enumerate(FOLDERS.values()):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            random_image(100 + 10 * k + i, size=(64, 40)).save(root / folder / f"{i}.png")
    (root / "bullfrog" / "broken.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture
def frog_json(tmp_path):
    path = tmp_path / "frogs.json"
    path.write_text(json.dumps(FROGS))
    return path


def label_cli(tree, frog_json, clip_dir, out, *flags):
    """`explain label` over the tree, in this process, without caches; its exit status."""
    common = ["--descriptors", str(frog_json), "--model", str(clip_dir), "--out", str(out), "--workers", "0"]
    return main(["label", str(tree), *common, "--no-cache", *flags])


def unique(name: str) -> str:
    """A dataset name no other run can hold: FiftyOne shares one database between processes that run at once."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def imported(tree, name):
    return fo.Dataset.from_dir(
        dataset_dir=str(tree), dataset_type=fo.types.ImageClassificationDirectoryTree, name=unique(name)
    )


def test_apply_model_fills_fiftyones_fields_and_the_explanation(clip_dir, tree, frog_json, tmp_path):
    dataset = imported(tree, "apply")
    names = sorted(dataset.distinct("ground_truth.label"))
    model = DescryModel(FROGS, str(clip_dir), classes=names, device="cpu", error_field="descry_error")
    dataset.apply_model(model, label_field="descry", batch_size=4, num_workers=0)
    # The same images through the command line, into rows to compare with.
    out = tmp_path / "labels"
    assert label_cli(tree, frog_json, clip_dir, out, "--classes", ",".join(names), "--batch-size", "4") == 1
    import pyarrow.parquet as pq

    rows = {row["path"]: row for row in pq.read_table(out / "labels.parquet").to_pylist()}
    assert model.classes == names
    for sample in dataset:
        row = rows[sample.filepath]
        label = sample["descry"]
        if row["error"]:
            assert label is None and sample["descry_error"] == row["error"] and "broken.png" in row["error"]
            continue
        assert sample["descry_error"] is None
        assert label.label == row["label"] and label.label in names  # the dataset's own spelling
        assert label.confidence == pytest.approx(row["probability"], abs=1e-5)
        assert len(label.logits) == len(names)
        assert int(np.argmax(label.logits)) == names.index(label.label)
        assert [t["class"] for t in label["top"]] == [t["class"] for t in row["top"]]
        assert [t["score"] for t in label["top"]] == pytest.approx([t["score"] for t in row["top"]], abs=1e-4)
        assert label["baseline_label"] == row["baseline_label"]
        assert label["margin"] == pytest.approx(row["margin"], abs=1e-4)
        assert [(d["class"], d["descriptor"]) for d in label["descriptors"]] == [
            (d["class"], d["descriptor"]) for d in row["descriptors"]
        ]


def test_evaluate_classifications_needs_no_name_mapping_and_counts_like_descry(clip_dir, tree, frog_json, tmp_path):
    dataset = imported(tree, "evaluate")
    names = dataset.distinct("ground_truth.label")
    dataset.apply_model(DescryModel(FROGS, str(clip_dir), classes=names, device="cpu"), label_field="descry")
    results = dataset.evaluate_classifications("descry", gt_field="ground_truth", eval_key="check")
    assert main(["evaluate", str(tree), "--descriptors", str(frog_json), "--model", str(clip_dir),
                 "--out", str(tmp_path / "eval"), "--workers", "0", "--no-cache"]) == 1  # fmt: skip
    metrics = next(iter(json.loads((tmp_path / "eval" / "metrics.json").read_text()).values()))["descriptors"]
    # FiftyOne counts the unreadable file as a wrong prediction; Descry reports that number as acc1_all.
    assert metrics["n_unreadable"] == 1 and metrics["n_samples"] == 9
    assert results.metrics()["accuracy"] == pytest.approx(metrics["acc1_all"])
    assert metrics["acc1_all"] == pytest.approx(metrics["acc1"] * 9 / 10)


def test_heatmaps_arrive_as_fiftyone_heatmap_fields(clip_dir, tree):
    dataset = imported(tree, "maps").match(fo.ViewField("filepath").ends_with("0.png"))
    model = DescryModel(FROGS, str(clip_dir), device="cpu", heatmaps=2)
    dataset.apply_model(model, label_field="descry", batch_size=2, num_workers=0)
    for sample in dataset:
        first, second = sample["descry_heatmap_1"], sample["descry_heatmap_2"]
        label = sample["descry"]
        strongest = [d for d in label["descriptors"] if d["class"] == label.label][:2]
        assert [first["descriptor"], second["descriptor"]] == [d["descriptor"] for d in strongest]
        assert first["score"] == pytest.approx(strongest[0]["score"], abs=1e-4)
        assert first.range == second.range and first.range[0] <= first.map[first.map != 0].min()
        # A 64x40 image: the model saw its centre 40x40 square, so the map covers that and is 0 on each side.
        height, width = first.map.shape
        assert width / height == pytest.approx(64 / 40, abs=0.05)
        assert (first.map[:, 0] == 0).all() and (first.map[:, -1] == 0).all() and (first.map[:, width // 2] != 0).all()
    named = DescryModel(FROGS, str(clip_dir), device="cpu", heatmaps=["tailed frog: flattened body", "protruding eyes"])
    dataset.apply_model(named, label_field="other", num_workers=0)
    sample = dataset.first()
    assert sample["descry_heatmap_tailed_frog_flattened_body"]["descriptor"] == "flattened body"
    assert sample["descry_heatmap_protruding_eyes"]["class_name"] == "tree frog"
    assert sample["descry_heatmap_protruding_eyes"]["method"].startswith("ClearCLIP")  # how it was made, and units
    assert sample["descry_heatmap_protruding_eyes"]["units"].startswith("the descriptor's score at each location")


def test_a_model_without_heatmaps_is_refused_before_any_sample(siglip_dir, tmp_path):
    from tests.tiny_models import save_tiny_open_clip

    timm_tower = str(save_tiny_open_clip(tmp_path / "timm", "timm"))  # maps by gradients, which int8 cannot give
    with pytest.raises(HeatmapsUnavailable, match="int8's packed weights"):
        DescryModel(FROGS, timm_tower, device="cpu", heatmaps=1, precision="int8")
    with pytest.raises(ValueError, match="belongs to"):
        DescryModel({"a": ["spots"], "b": ["spots"]}, str(siglip_dir), device="cpu", heatmaps=["spots"])


def test_heatmap_canvas_places_the_grid_over_the_region_the_model_saw():
    grid = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    canvas = heatmap_canvas(grid, (20, 0, 60, 40), (80, 40))  # the centre 40x40 of an 80x40 image
    assert canvas.shape == (16, 32)  # 8 px a patch over the region, the image's aspect kept
    assert (canvas[:, :8] == 0).all() and (canvas[:, 24:] == 0).all()
    assert canvas[0, 8] == pytest.approx(1.0, abs=0.3) and canvas[-1, 23] == pytest.approx(4.0, abs=0.3)


def test_the_export_imports_with_the_same_fields_as_apply_model(clip_dir, tree, frog_json, tmp_path):
    out = tmp_path / "labels"
    assert label_cli(tree, frog_json, clip_dir, out, "--format", "fiftyone", "--classes-from", str(tree)) == 1
    loaded = load_labels(out / "fiftyone", name=unique("export"))
    applied = imported(tree, "applied")
    names = applied.distinct("ground_truth.label")
    applied.apply_model(
        DescryModel(FROGS, str(clip_dir), classes=names, device="cpu", error_field="descry_error"),
        label_field="descry",
        batch_size=64,
        num_workers=0,
    )
    by_path = {s.filepath: s for s in applied}
    assert len(loaded) == len(applied) == 10
    assert loaded.info["descry"]["classes"] == sorted(names) and loaded.info["descry"]["logits"] is True
    for sample in loaded:
        other = by_path[sample.filepath]
        assert sample["descry_error"] == other["descry_error"]
        if sample["descry"] is None:
            assert other["descry"] is None and "broken.png" in sample.filepath
            continue
        mine, theirs = sample["descry"], other["descry"]
        assert mine.label == theirs.label and mine.confidence == pytest.approx(theirs.confidence, abs=1e-5)
        assert list(mine.logits) == pytest.approx(list(theirs.logits), abs=1e-4)
        for field in ("top", "baseline_label", "baseline_probability", "margin", "descriptors"):
            assert type(mine[field]) is type(theirs[field]), field
    # The README's plain import line works too, into a named label field.
    plain = fo.Dataset.from_dir(
        dataset_dir=str(out / "fiftyone"),
        dataset_type=fo.types.FiftyOneImageClassificationDataset,
        data_path="data.json",
        label_field="descry",
    )
    assert plain.count("descry") == 9
    assert all(label.logits is not None for label in plain.values("descry") if label is not None)


def test_review_tags_abstentions_and_several_labels_arrive_in_fiftyone(clip_dir, tree, frog_json, tmp_path):
    from explain.fiftyone_model import save_review_view

    dataset = imported(tree, "review")
    names = dataset.distinct("ground_truth.label")
    unsure = DescryModel(FROGS, str(clip_dir), classes=names, device="cpu", min_margin=1e9, review_margin=1e9)
    dataset.apply_model(unsure, label_field="descry", batch_size=4, num_workers=0)
    save_review_view(dataset)
    readable = dataset.match(fo.ViewField("filepath").ends_with("broken.png") == False)  # noqa: E712
    assert not dataset.has_field("descry") or readable.count("descry") == 0  # every label withheld
    assert readable.count_sample_tags() == {"descry:abstained": 9, "descry:low-margin": 9}
    assert all(r.startswith("unsure between ") for r in readable.values("descry_abstained"))
    review = dataset.load_saved_view("descry-review")
    margins = review.values("descry_margin")
    assert len(margins) == 9 and margins == sorted(margins)

    # The export: tags and the saved view through load_labels; several labels as Classifications.
    out = tmp_path / "labels"
    flags = ["--format", "fiftyone", "--classes-from", str(tree), "--probabilities", "sigmoid", "--multi-label"]
    assert label_cli(tree, frog_json, clip_dir, out, *flags, "--threshold", "0", "--review-margin", "1e9") == 1
    loaded = load_labels(out / "fiftyone", name=unique("review-export"))
    labelled = loaded.exists("descry")
    assert len(labelled) == 9
    assert all(
        isinstance(label, fo.Classifications) and len(label.classifications) == 3 for label in labelled.values("descry")
    )
    assert loaded.count_sample_tags() == {"descry:low-margin": 9}
    margins = loaded.load_saved_view("descry-review").values("descry_margin")
    assert len(margins) == 9 and margins == sorted(margins)
