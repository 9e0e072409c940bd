"""The command line, end to end: tables, JSON lines, subsets, and every error path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explain.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args):
    code = main(["classify", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lines_one_per_image(capsys, clip_dir, image_files, frog_file):
    code, out, err = run(capsys, *image_files, "--descriptors", frog_file, "--model", clip_dir, "--json")
    assert code == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in image_files]
    for record in records:
        assert record["model"] == str(clip_dir)
        assert {p["class"] for p in record["predictions"]} == {"tree frog", "tailed frog", "bullfrog"}
        assert sum(p["probability"] for p in record["predictions"]) == pytest.approx(1.0)
        for key in ("predictions", "baseline"):
            scores = [entry["score"] for entry in record[key]]
            assert scores == sorted(scores, reverse=True)
        for prediction in record["predictions"]:
            scores = [d["score"] for d in prediction["descriptors"]]
            assert scores == sorted(scores, reverse=True)
            assert sum(scores) / len(scores) == pytest.approx(prediction["score"], abs=1e-4)
    assert records[0]["predictions"] != records[1]["predictions"]


def test_table_shows_top_classes_and_ranked_descriptors(capsys, clip_dir, image_files, frog_file):
    code, out, err = run(capsys, image_files[0], "--descriptors", frog_file, "--model", clip_dir)
    assert code == 0 and err == ""
    assert out.startswith(f"{image_files[0]}  (model: {clip_dir}; probabilities: softmax)")
    assert "prob" in out and "baseline" in out and "margin +" in out
    for name in ("tree frog", "tailed frog", "bullfrog"):
        assert name in out
    assert "over 4 descriptors" in out or "over 3 descriptors" in out


def test_classes_pick_a_subset_in_order_with_fallback(capsys, clip_dir, image_files, frog_file):
    code, out, _ = run(
        capsys,
        image_files[0],
        "--descriptors",
        frog_file,
        "--model",
        clip_dir,
        "--json",
        "--classes",
        "Tailed_Frog, axolotl",
    )
    record = json.loads(out)
    assert code == 0
    by_class = {p["class"]: p for p in record["predictions"]}
    assert set(by_class) == {"Tailed_Frog", "axolotl"}
    assert by_class["axolotl"]["fallback"] is True
    assert by_class["axolotl"]["descriptors"][0]["prompt"] == "a photo of a axolotl."
    assert by_class["Tailed_Frog"]["fallback"] is False and len(by_class["Tailed_Frog"]["descriptors"]) == 3

    code, out, _ = run(
        capsys, image_files[0], "--descriptors", frog_file, "--model", clip_dir, "--classes", "tree frog,axolotl"
    )
    assert "axolotl: no descriptors, scored with its template prompt" in out


def test_template_changes_the_baseline_only(capsys, clip_dir, image_files, frog_file):
    base = ["--descriptors", frog_file, "--model", clip_dir, "--json"]
    _, plain, _ = run(capsys, image_files[0], *base)
    _, other, _ = run(capsys, image_files[0], *base, "--template", "a blurry photo of a {}.")
    plain, other = json.loads(plain), json.loads(other)
    assert plain["predictions"] == other["predictions"]
    assert plain["baseline"] != other["baseline"]


def test_a_bad_image_does_not_stop_the_others(capsys, clip_dir, image_files, frog_file, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    code, out, err = run(
        capsys,
        image_files[0],
        tmp_path / "missing.png",
        broken,
        image_files[1],
        "--descriptors",
        frog_file,
        "--model",
        clip_dir,
        "--json",
    )
    assert code == 1
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(image_files[0]), str(image_files[1])]
    assert err.splitlines() == [
        f"error: {tmp_path / 'missing.png'}: no such file",
        f"error: {broken}: not a recognised image format",
    ]


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("{broken", [], "not valid JSON"),
        ('{"frog": "green"}', [], "expected a list of strings, got a string"),
        ("{}", [], "the class list is empty"),
        ('{"frog": ["green"]}', ["--classes", " , "], "the class list is empty"),
        ('{"frog": ["green"]}', ["--classes", "frog,Frog"], "listed twice"),
        ('{"frog": ["green"]}', ["--template", "a photo"], "must contain exactly one '{}'"),
    ],
)
def test_bad_descriptors_fail_before_loading_a_model(capsys, tmp_path, image_files, content, extra, message):
    path = tmp_path / "d.json"
    path.write_text(content)
    # The model name is bogus: these errors must be found without loading it.
    code, out, err = run(capsys, image_files[0], "--descriptors", path, "--model", "not/loaded", *extra)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_unknown_model(capsys, image_files, frog_file):
    code, out, err = run(capsys, image_files[0], "--descriptors", frog_file, "--model", "no-such-org/no-such-model")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "cannot load model 'no-such-org/no-such-model'" in err


def test_no_readable_image_loads_no_model(capsys, tmp_path, frog_file):
    code, out, err = run(capsys, tmp_path / "a.png", "--descriptors", frog_file, "--model", "not/loaded")
    assert code == 1 and out == "" and "cannot load model" not in err


def subprocess_run(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "explain", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def test_python_dash_m_entry_point(clip_dir, image_files, frog_file, tmp_path):
    cache = tmp_path / "cli-cache"
    done = subprocess_run(
        "classify",
        image_files[0],
        tmp_path / "gone.jpg",
        "--descriptors",
        frog_file,
        "--model",
        clip_dir,
        "--json",
        env_extra={"DESCRY_CACHE_DIR": str(cache)},
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["image"] == str(image_files[0])
    assert done.stderr.strip() == f"error: {tmp_path / 'gone.jpg'}: no such file"
    assert (cache / "embeddings.sqlite3").is_file()


def test_entry_point_errors_have_no_traceback(image_files, frog_file):
    done = subprocess_run(
        "classify", image_files[0], "--descriptors", frog_file, "--model", "no-such-org/no-such-model"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_no_cache_writes_nothing(capsys, clip_dir, image_files, frog_file, tmp_path):
    code, _, _ = run(capsys, image_files[0], "--descriptors", frog_file, "--model", clip_dir, "--no-cache")
    assert code == 0 and not (tmp_path / "cache").exists()


def test_descriptor_problems_are_a_warning_not_an_error(capsys, clip_dir, image_files, tmp_path):
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps({"newt": ["a newt's crest", "spotted skin"], "toad": ["warts", " ".join(["long"] * 80)]})
    )
    code, out, err = run(capsys, image_files[0], "--descriptors", path, "--model", clip_dir, "--json")
    assert code == 0 and json.loads(out)["image"] == str(image_files[0])
    assert err.splitlines() == [
        "warning: class 'newt': descriptor \"a newt's crest\" contains the class name (and 1 more); "
        f"see python -m descriptors validate {path}"
    ]


def test_prompt_style_and_suffix_reach_the_encoder(capsys, clip_dir, image_files, frog_file):
    code, out, _ = run(
        capsys,
        image_files[0],
        "--descriptors",
        frog_file,
        "--model",
        clip_dir,
        "--json",
        "--prompt-style",
        "dclip-release",
        "--prompt-suffix",
        ".",
        "--template",
        "{}.",
    )
    record = json.loads(out)
    assert code == 0
    prompts = {d["descriptor"]: d["prompt"] for p in record["predictions"] for d in p["descriptors"]}
    assert prompts["a bright green colour"] == "tree frog, which is a bright green colour."
    assert prompts["protruding eyes"] == "tree frog, which has protruding eyes."
    assert prompts["has a deep call"] == "bullfrog, which has a deep call."
    code, out, _ = run(
        capsys,
        image_files[0],
        "--descriptors",
        frog_file,
        "--model",
        clip_dir,
        "--json",
        "--prompt-suffix",
        " in a photo",
    )
    prompts = {d["descriptor"]: d["prompt"] for p in json.loads(out)["predictions"] for d in p["descriptors"]}
    assert prompts["protruding eyes"] == "tree frog, which has protruding eyes in a photo"


def test_long_encodes_show_a_progress_bar_and_short_ones_do_not(capsys, clip_dir, image_files, frog_file, tmp_path):
    code, _, err = run(capsys, image_files[0], "--descriptors", frog_file, "--model", clip_dir, "--no-cache")
    assert code == 0 and "encoding" not in err and "prompts:" not in err
    many = tmp_path / "many.json"
    many.write_text(json.dumps({f"class {i}": [f"feature {j} of class {i}" for j in range(5)] for i in range(60)}))
    code, _, err = run(capsys, image_files[0], "--descriptors", many, "--model", clip_dir, "--no-cache")
    assert code == 0
    assert "encoding 360 new prompts (first use with this model; cached for later runs)" in err  # 300 + 60 templates
    assert "prompts: 100%" in err and "360/360" in err
