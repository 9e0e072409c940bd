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
from explain.labelling import read_sources
from tests.conftest import FROGS, label, random_image

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
    summary = label(collection, tmp_path / "out", clip_dir, recipe={"top": 2})
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
    # The label's and the runner-up's descriptor scores, in class rank order, each highest first.
    runner_up = good["top"][1]["class"]
    assert [d["class"] for d in good["descriptors"]] == [good["label"]] * len(FROGS[good["label"]]) + [runner_up] * len(
        FROGS[runner_up]
    )
    for name in (good["label"], runner_up):
        mine = [d for d in good["descriptors"] if d["class"] == name]
        assert sorted(d["descriptor"] for d in mine) == sorted(FROGS[name])
        assert [d["score"] for d in mine] == sorted((d["score"] for d in mine), reverse=True)
        # A class's score is the mean of its descriptors' scores, and `top` carries it.
        score = next(t["score"] for t in good["top"] if t["class"] == name)
        assert score == pytest.approx(sum(d["score"] for d in mine) / len(mine), abs=1e-5)
    assert good["margin"] == pytest.approx(good["top"][0]["score"] - good["top"][1]["score"])
    assert good["margin"] >= 0 and good["baseline_label"] in FROGS


def test_csv_and_fiftyone_formats(clip_dir, collection, tmp_path):
    label(collection, tmp_path / "csv", clip_dir, recipe={"top": 3}, fmt="csv")
    with open(tmp_path / "csv" / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and {"top1_class", "top1_score", "top3_probability", "descriptors", "error"} <= set(rows[0])
    good = next(r for r in rows if r["label"])
    assert json.loads(good["descriptors"])[0]["descriptor"] in FROGS[good["label"]]
    assert float(good["top1_score"]) > float(good["top2_score"])
    assert json.loads((tmp_path / "csv" / "provenance.json").read_text())["top"] == 3
    label(collection, tmp_path / "fo", clip_dir, fmt="fiftyone")
    folder = tmp_path / "fo" / "fiftyone"
    labels = json.loads((folder / "labels.json").read_text())
    data = json.loads((folder / "data.json").read_text())
    assert labels["classes"] == list(FROGS) and set(labels["labels"]) == set(data) and len(data) == 9
    some = next(v for v in labels["labels"].values() if v)
    # FiftyOne's importer reads label, confidence and attributes; logits must be among the attributes.
    assert set(some) == {"label", "confidence", "attributes"} and len(some["attributes"]["logits"]) == len(FROGS)
    assert {"top", "baseline_label", "baseline_probability", "margin", "descriptors"} <= set(some["attributes"])
    assert sum(1 for v in labels["labels"].values() if v is None) == 1  # the unreadable file: no label...
    errors = json.loads((folder / "errors.json").read_text())
    assert list(errors) == [str((collection / "3b.jpg").resolve())]  # ...and why, kept beside it
    assert json.loads((folder / "provenance.json").read_text())["logits"] is True


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
    label(collection, tmp_path / "local", clip_dir)
    label(collection, tmp_path / "ray", clip_dir, engine="ray", workers=2, batch_size=4)
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
    summary = label(f"local://{photos}", tmp_path / "out", clip_dir, engine="ray", workers=1, batch_size=2)
    rows = by_path(pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist())
    assert summary["labelled"] == 5 and len(rows) == 5 and all(row["label"] in FROGS for row in rows.values())
    local = by_path(pq.read_table(label(photos, tmp_path / "local", clip_dir)["files"][0]).to_pylist())
    for path, row in rows.items():
        other = (
            local[str(Path(path))]
            if str(Path(path)) in local
            else local[next(p for p in local if p.endswith(Path(path).name))]
        )
        assert row["label"] == other["label"] and row["probability"] == pytest.approx(other["probability"], abs=1e-5)
    again = label(f"local://{photos}", tmp_path / "out", clip_dir, engine="ray", workers=1, batch_size=2)
    assert again["labelled"] == 0 and again["skipped"] == 5  # resumed: nothing left to do


def test_labels_carry_their_provenance(clip_dir, collection, frog_file, tmp_path):
    import hashlib

    import explain

    out = tmp_path / "out"
    command = ["label", str(collection), "--descriptors", str(frog_file), "--model", str(clip_dir), "--out", str(out),
               "--workers", "0", "--top", "2", "--template", "a blurry photo of a {}."]  # fmt: skip
    assert main(command) == 1  # one file could not be read
    record = json.loads(pq.read_schema(out / "labels.parquet").metadata[b"descry"])
    assert record == json.loads((out / "provenance.json").read_text())
    assert record["model"] == str(clip_dir) and record["backend"] == "transformers"
    assert record["descriptor_file"] == str(frog_file.resolve())
    assert record["descriptors_sha256"] == hashlib.sha256(frog_file.read_bytes()).hexdigest()
    assert record["classes"] == list(FROGS) and record["top"] == 2 and record["descriptor_scores_for"] == 2
    assert record["template"] == "a blurry photo of a {}." and record["prompt_style"]["name"] == "descry"
    assert record["versions"]["descry"] == explain.__version__ and record["versions"]["torch"]
    assert record["command"] == ["python", "-m", "explain", *command]  # as it was typed
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{explain.__version__}"' in pyproject


def test_a_rerun_made_another_way_is_refused(clip_dir, collection, tmp_path, capsys):
    out = tmp_path / "out"
    label(collection, out, clip_dir)
    with pytest.raises(Exception, match="another descriptors_sha256"):
        label(collection, out, clip_dir, {**FROGS, "newt": ["a tail"]})
    with pytest.raises(Exception, match="another top"):
        label(collection, out, clip_dir, recipe={"top": 1})
    with pytest.raises(Exception, match="logits"):
        label(collection, out, clip_dir, fmt="fiftyone")  # every class score: the first run did not keep them
    assert label(collection, out, clip_dir, fmt="csv")["skipped"] == 9  # another format of the same rows is fine


def test_labels_in_the_datasets_own_names_and_every_class_explained(clip_dir, collection, tmp_path):
    names = ("tree_frog", "Tailed-Frog", "bullfrog")
    renamed = by_path(
        pq.read_table(
            label(collection, tmp_path / "a", clip_dir, recipe={"classes": names, "explain": None})["files"][0]
        ).to_pylist()
    )
    plain = by_path(pq.read_table(label(collection, tmp_path / "b", clip_dir)["files"][0]).to_pylist())
    spelled = dict(zip(FROGS, names, strict=True))
    for path, row in plain.items():
        other = renamed[path]
        if row["label"] is None:
            continue
        # The prompts use the descriptor keys either way, so every number is the same; only the names differ.
        assert other["label"] == spelled[row["label"]] and other["probability"] == pytest.approx(row["probability"])
        assert {d["class"] for d in other["descriptors"]} == set(names)  # every class's scores, with --all
        assert len(other["descriptors"]) == sum(len(v) for v in FROGS.values())


def test_classes_from_a_folder_tree(clip_dir, collection, tmp_path):
    tree = tmp_path / "tree"
    for folder in ("tree_frog", "bullfrog"):
        (tree / folder).mkdir(parents=True)
        random_image(7).save(tree / folder / "a.png")
    frogs = tmp_path / "frogs.json"
    frogs.write_text(json.dumps(FROGS))
    out = tmp_path / "out"
    main(["label", str(collection), "--descriptors", str(frogs), "--model", str(clip_dir), "--out", str(out),
          "--classes-from", str(tree), "--workers", "0", "--descriptor-scores", "1"])  # fmt: skip
    rows = [r for r in pq.read_table(out / "labels.parquet").to_pylist() if r["label"]]
    assert {r["label"] for r in rows} <= {"tree_frog", "bullfrog"}
    assert all({d["class"] for d in r["descriptors"]} == {r["label"]} for r in rows)


def test_native_messages_go_to_the_log_and_ours_to_the_terminal(tmp_path, capfd):
    from explain.labelling.ray_engine import native_stderr_to

    with native_stderr_to(tmp_path / "ray.log"):
        os.write(2, b"[state-dump] from C++\n")
        print("starting Ray and 2 workers", file=sys.stderr)
    err = capfd.readouterr().err
    assert "starting Ray" in err and "state-dump" not in err
    assert (tmp_path / "ray.log").read_text() == "[state-dump] from C++\n"
    print("after", file=sys.stderr)
    assert "after" in capfd.readouterr().err  # the terminal is back


def test_a_ray_run_speaks_only_for_itself(clip_dir, collection, frog_file, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "explain", "label", str(collection), "--descriptors", str(frog_file), "--model",
         str(clip_dir), "--out", str(out), "--engine", "ray", "--workers", "2", "--batch-size", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one file could not be read
    assert "starting Ray and 2 workers" in done.stderr  # what it is doing while the workers start
    for noise in ("INFO", "WARNING", "deprecated", "core_worker", "Started a local Ray instance"):
        assert noise not in done.stderr, noise
    assert "starting Ray" not in (out / "ray.log").read_text()  # Ray's own messages only, kept for later
    assert "labelled 9 images" in done.stdout
