"""Pre-labelling: rows with their explanations, every output format, bad files mid-batch, resume after SIGKILL,
and the Ray engine giving the same labels and metrics as the local one."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from explain.cli import main
from explain.labelling import label_collection, read_sources
from tests.conftest import FROGS, random_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def collection(tmp_path):
    root = tmp_path / "photos"
    (root / "deep" / "er").mkdir(parents=True)
    for i in range(7):
        random_image(i).save(root / f"{i}.png")
    (root / "3b.jpg").write_text("a text file with an image's name")  # unreadable, among the good ones
    random_image(20).save(root / "deep" / "er" / "x.jpg")
    return root


def by_path(rows):
    return {row["path"]: row for row in rows}


def test_local_labels_carry_their_explanation(clip_dir, collection, tmp_path):
    summary = label_collection(collection, FROGS, str(clip_dir), tmp_path / "out", top=2, workers=0)
    assert summary["labelled"] == 9 and summary["failed"] == 1
    rows = by_path(pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist())
    assert len(rows) == 9
    broken = rows[str(collection / "3b.jpg")]
    assert broken["label"] is None and "not a recognised image format" in broken["error"]
    good = rows[str(collection / "deep" / "er" / "x.jpg")]
    assert good["label"] in FROGS and good["error"] is None and len(good["top"]) == 2
    assert good["top"][0]["class"] == good["label"] and good["top"][0]["probability"] == pytest.approx(
        good["probability"]
    )
    assert [d["descriptor"] for d in good["descriptors"]] and sorted(
        d["descriptor"] for d in good["descriptors"]
    ) == sorted(FROGS[good["label"]])
    assert good["margin"] >= 0 and good["baseline_label"] in FROGS


def test_csv_and_fiftyone_formats(clip_dir, collection, tmp_path):
    label_collection(collection, FROGS, str(clip_dir), tmp_path / "csv", fmt="csv", top=3, workers=0)
    with open(tmp_path / "csv" / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and {"top1_class", "top3_probability", "descriptors", "error"} <= set(rows[0])
    good = next(r for r in rows if r["label"])
    assert json.loads(good["descriptors"])[0]["descriptor"] in FROGS[good["label"]]
    label_collection(collection, FROGS, str(clip_dir), tmp_path / "fo", fmt="fiftyone", workers=0)
    labels = json.loads((tmp_path / "fo" / "fiftyone" / "labels.json").read_text())
    data = json.loads((tmp_path / "fo" / "fiftyone" / "data.json").read_text())
    assert labels["classes"] == list(FROGS) and set(labels["labels"]) == set(data) and len(data) == 9
    some = next(v for v in labels["labels"].values() if v)
    assert set(some) == {"label", "confidence", "logits", "attributes"} and len(some["logits"]) == len(FROGS)
    assert sum(1 for v in labels["labels"].values() if v is None) == 1  # the unreadable file: no label


def test_sources_from_lists(collection, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{collection / '0.png'}\nphotos/1.png\n")
    assert read_sources(listing) == [str(collection / "0.png"), str(tmp_path / "photos" / "1.png")]
    table = tmp_path / "list.csv"
    table.write_text("id,path\n1,photos/2.png\n")
    assert read_sources(table) == [str(tmp_path / "photos" / "2.png")]


def test_a_killed_run_resumes_and_labels_every_image_once(clip_dir, tmp_path):
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(120):
        random_image(i, size=(64, 48)).save(photos / f"{i:03d}.png")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "explain",
        "label",
        str(photos),
        "--descriptors",
        str(ROOT / "assets/descriptors/demo.json"),
        "--model",
        str(clip_dir),
        "--out",
        str(out),
        "--no-cache",
        "--workers",
        "0",
        "--part-size",
        "3",
        "--batch-size",
        "3",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not list((out / "parts").glob("part-*.jsonl")) if (out / "parts").exists() else True:
        assert time.monotonic() < deadline and process.poll() is None, "no part was written"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(list((out / "parts").glob("part-*.jsonl")))
    assert not (out / "labels.parquet").exists() or written * 3 >= 120
    assert all(
        json.loads(line) for part in (out / "parts").glob("part-*.jsonl") for line in part.read_text().splitlines()
    )  # whole
    assert main(command[3:]) == 0
    assert not list((out / "parts").glob(".*.tmp"))  # what the kill left half-written is cleared
    rows = pq.read_table(out / "labels.parquet").to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in photos.glob("*.png"))  # each exactly once


@pytest.fixture(scope="module")
def ray_here():
    ray = pytest.importorskip("ray")
    from explain.labelling import ray_engine

    ray_engine.start(cpus=2)
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_labels_and_metrics(ray_here, clip_dir, collection, tmp_path, capsys):
    label_collection(collection, FROGS, str(clip_dir), tmp_path / "local", workers=0)
    label_collection(collection, FROGS, str(clip_dir), tmp_path / "ray", engine="ray", workers=2, batch_size=4)
    local = by_path(pq.read_table(tmp_path / "local" / "labels.parquet").to_pylist())
    ray = by_path(pq.read_table(tmp_path / "ray" / "labels.parquet").to_pylist())
    assert set(local) == set(ray)
    for path, row in local.items():
        other = ray[path]
        assert row["label"] == other["label"] and (row["error"] is None) == (other["error"] is None)
        if row["label"]:
            assert row["probability"] == pytest.approx(other["probability"], abs=1e-5)
            assert [d["score"] for d in row["descriptors"]] == pytest.approx(
                [d["score"] for d in other["descriptors"]], abs=1e-5
            )
    data = tmp_path / "data"
    for name in FROGS:
        (data / name).mkdir(parents=True)
        for i in range(3):
            random_image(30 + 3 * len(name) + i).save(data / name / f"{i}.png")
    frog_file = tmp_path / "frogs.json"
    frog_file.write_text(json.dumps(FROGS))
    common = [
        "evaluate",
        str(data),
        "--descriptors",
        str(frog_file),
        "--model",
        str(clip_dir),
        "--workers",
        "0",
        "--no-cache",
    ]
    assert main([*common, "--out", str(tmp_path / "e-local")]) == 0
    assert main([*common, "--out", str(tmp_path / "e-ray"), "--engine", "ray"]) == 0
    local_metrics = json.loads((tmp_path / "e-local" / "metrics.json").read_text())
    ray_metrics = json.loads((tmp_path / "e-ray" / "metrics.json").read_text())
    for model, methods in local_metrics.items():
        for method in ("descriptors", "baseline", "waffle"):
            ours, theirs = methods[method], ray_metrics[model][method]
            # What is counted is identical; what is averaged over probabilities agrees to float rounding,
            # since the two engines batch the images differently.
            for key in ("acc1", "acc5", "mean_per_class_recall", "n_samples", "confusion_matrix", "per_class"):
                assert ours[key] == theirs[key], (method, key)
            for key in ("mean_confidence", "ece"):
                assert ours[key] == pytest.approx(theirs[key], abs=1e-6)


def test_ray_reads_the_images_where_they_lie(ray_here, clip_dir, tmp_path):
    photos = tmp_path / "bucket"
    photos.mkdir()
    for i in range(5):
        random_image(40 + i).save(photos / f"{i}.png")
    summary = label_collection(
        f"local://{photos}", FROGS, str(clip_dir), tmp_path / "out", engine="ray", workers=1, batch_size=2
    )
    rows = by_path(pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist())
    assert summary["labelled"] == 5 and len(rows) == 5 and all(row["label"] in FROGS for row in rows.values())
    local = by_path(
        pq.read_table(
            label_collection(photos, FROGS, str(clip_dir), tmp_path / "local", workers=0)["files"][0]
        ).to_pylist()
    )
    for path, row in rows.items():
        other = (
            local[str(Path(path))]
            if str(Path(path)) in local
            else local[next(p for p in local if p.endswith(Path(path).name))]
        )
        assert row["label"] == other["label"] and row["probability"] == pytest.approx(other["probability"], abs=1e-5)
    again = label_collection(
        f"local://{photos}", FROGS, str(clip_dir), tmp_path / "out", engine="ray", workers=1, batch_size=2
    )
    assert again["labelled"] == 0 and again["skipped"] == 5  # resumed: nothing left to do
