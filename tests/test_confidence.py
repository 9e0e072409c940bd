"""Confidence maths against independent computations: torch's losses, brute-force loops, known temperatures."""

import json

import numpy as np
import pytest
import torch

from explain.cli import main
from explain.confidence import (
    Abstention,
    ProbabilityRule,
    aurc,
    calibrate,
    choose_calibration,
    coverage_at,
    fit_temperature,
    fit_thresholds,
    load_calibrations,
    margins,
    negative_log_likelihood,
    resolve_kind,
    risk_coverage,
    save_calibrations,
    selective_metrics,
)
from explain.errors import ExplainError
from explain.metrics import expected_calibration_error
from tests.conftest import FROGS


def synthetic(n=20000, classes=10, temperature=2.0, seed=0):
    """Scores whose labels are drawn from softmax(scores / temperature): the true temperature is known."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 4, size=(n, classes))
    p = torch.softmax(torch.tensor(scores / temperature), dim=1).numpy()
    targets = np.array([rng.choice(classes, p=row) for row in p])
    return scores, targets


IDENTITY = {"model": "m", "method": "descriptors", "prompt_style": {"name": "descry", "prefix": "", "suffix": ""}}


def test_auto_follows_the_training_loss():
    assert resolve_kind("auto", sigmoid_loss=True) == "sigmoid"
    assert resolve_kind("auto", sigmoid_loss=False) == "softmax"
    assert resolve_kind("softmax", sigmoid_loss=True) == "softmax"
    with pytest.raises(ExplainError, match="one of auto, softmax, sigmoid"):
        resolve_kind("tempered", False)


def test_rules_match_torch():
    scores = np.array([[25.54, 24.09, 20.0], [-3.0, 1.5, 0.25]])
    soft = ProbabilityRule("softmax", 1.7)(scores)
    assert soft == pytest.approx(torch.softmax(torch.tensor(scores) / 1.7, dim=1).numpy(), abs=1e-12)
    sig = ProbabilityRule("sigmoid", 0.5)(scores)
    assert sig == pytest.approx(torch.sigmoid(torch.tensor(scores) / 0.5).numpy(), abs=1e-12)
    assert ProbabilityRule("sigmoid")(scores)[1].sum() != pytest.approx(1.0)  # per class, not normalised


def test_nll_equals_torchs_losses():
    scores, targets = synthetic(n=300, classes=5)
    expected = torch.nn.functional.cross_entropy(torch.tensor(scores / 3.0), torch.tensor(targets)).item()
    assert negative_log_likelihood(scores, targets, "softmax", 3.0) == pytest.approx(expected, abs=1e-9)
    one_hot = torch.nn.functional.one_hot(torch.tensor(targets), 5).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(scores / 3.0), one_hot, reduction="none")
    assert negative_log_likelihood(scores, targets, "sigmoid", 3.0) == pytest.approx(
        bce.sum(dim=1).mean().item(), abs=1e-9
    )


def test_the_true_temperature_is_recovered_within_five_percent():
    for true in (0.5, 2.0, 4.0):
        scores, targets = synthetic(temperature=true, seed=int(true * 10))
        assert fit_temperature(scores, targets, "softmax") == pytest.approx(true, rel=0.05)


def test_calibration_halves_the_held_out_ece_and_is_measured_on_held_out_data_only():
    scores, targets = synthetic(temperature=3.0)
    found = calibrate(scores, targets, [f"c{k}" for k in range(10)], "softmax", IDENTITY, "hash", 0.3, seed=1)
    assert found.n_fit == 14000 and found.n_held_out == 6000
    assert found.after["ece"] <= found.before["ece"] / 2
    assert found.after["nll"] < found.before["nll"]
    # The reported numbers are those of the held-out share, recomputed here independently.
    held = np.random.default_rng(1).permutation(20000)[14000:]
    p = torch.softmax(torch.tensor(scores[held]) / found.temperature, dim=1).numpy()
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == targets[held]
    assert found.after["ece"] == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-12)


def brute_selective(ranking, correct):
    order = sorted(range(len(ranking)), key=lambda i: (-ranking[i], i))
    accuracy = [sum(correct[j] for j in order[: k + 1]) / (k + 1) for k in range(len(order))]
    return accuracy


def test_aurc_and_coverage_equal_a_brute_force_computation():
    rng = np.random.default_rng(3)
    ranking = np.round(rng.random(400), 2)  # many ties
    correct = rng.random(400) < ranking
    accuracy = brute_selective(list(ranking), list(correct))
    assert aurc(ranking, correct) == pytest.approx(sum(1 - a for a in accuracy) / 400, abs=1e-9)
    for target in (0.9, 0.95):
        best = max([k + 1 for k, a in enumerate(accuracy) if a >= target], default=0)
        assert coverage_at(ranking, correct, target) == pytest.approx(best / 400, abs=1e-12)
    curve = risk_coverage(ranking, correct)
    assert len(curve["coverage"]) == 100 and curve["coverage"][-1] == 1.0
    assert curve["accuracy"][-1] == pytest.approx(correct.mean())
    assert curve["accuracy"][49] == pytest.approx(accuracy[199])


def test_a_perfect_ranking_has_the_lowest_aurc_and_margin_can_win():
    correct = np.array([True] * 8 + [False] * 2)
    assert aurc(np.arange(10, 0, -1), correct) < aurc(np.arange(10), correct)
    # Probability ranks one wrong sample first; the margin ranks it last.
    scores = np.array([[9.0, 8.9, -5], [5, 0, 0], [4, 0, 0], [3, 2.5, 2.5]])
    targets = np.array([1, 0, 0, 0])
    assert margins(scores) == pytest.approx([0.1, 5, 4, 0.5])
    found = selective_metrics(scores, targets, ProbabilityRule("softmax"))
    assert found["by_margin"]["aurc"] < found["by_probability"]["aurc"]
    assert found["better_ranking"] == "margin"


def test_thresholds_are_the_best_f1_of_each_class():
    rng = np.random.default_rng(5)
    probabilities = rng.random((200, 3))
    targets = rng.integers(0, 3, 200)
    found = fit_thresholds(probabilities, targets, ["a", "b", "c"])
    for k, name in enumerate("abc"):
        positive = targets == k

        def f1(t, k=k, positive=positive):
            chosen = probabilities[:, k] >= t
            tp = (chosen & positive).sum()
            return 2 * tp / (chosen.sum() + positive.sum())

        best = max(f1(t) for t in probabilities[:, k])
        assert f1(found[name]) == pytest.approx(best)


def test_several_labels_pass_their_own_thresholds():
    rule = ProbabilityRule("sigmoid", thresholds={"a": 0.9})
    assert rule.labels(["a", "b", "c"], np.array([0.8, 0.6, 0.4])) == ["b"]
    assert rule.labels(["a", "b", "c"], np.array([0.95, 0.6, 0.7])) == ["a", "c", "b"]


def test_abstention_gives_the_reason_in_one_line():
    rule = Abstention(min_probability=0.5, min_margin=0.3)
    assert rule.reason(0.4, 2.0, "tree frog", "tailed frog") == (
        "unsure between tree frog and tailed frog: probability 0.400 < 0.5"
    )
    assert rule.reason(0.9, 0.1, "tree frog", "tailed frog").endswith("margin 0.100 < 0.3")
    assert rule.reason(0.9, 0.5, "tree frog", "tailed frog") is None
    with pytest.raises(ExplainError, match="between 0 and 1"):
        Abstention(min_probability=2)


def test_a_calibration_for_another_model_or_style_is_refused(tmp_path):
    scores, targets = synthetic(n=500)
    entry = calibrate(scores, targets, [f"c{k}" for k in range(10)], "softmax", IDENTITY, "h")
    path = save_calibrations(tmp_path / "calibration.json", [entry], "evaluation")
    loaded = load_calibrations(path)
    current = {**IDENTITY, "probabilities": "softmax"}
    assert choose_calibration(loaded, current, path).temperature == pytest.approx(entry.temperature)
    with pytest.raises(ExplainError, match="another model 'm' \\(here 'other'\\)"):
        choose_calibration(loaded, {**current, "model": "other"}, path)
    with pytest.raises(ExplainError, match="prompt_style"):
        choose_calibration(loaded, {**current, "prompt_style": {"name": "dclip-release"}}, path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ExplainError, match="not a Descry calibration file"):
        load_calibrations(tmp_path / "bad.json")
    assert json.loads(path.read_text())["calibrations"][0]["data_sha256"] == "h"


# --- end to end: evaluate -> calibrate -> label, through the command line ------------------------------------


@pytest.fixture
def labelled_tree(tmp_path):
    """Twelve images in three class folders, named as the frog descriptors' keys."""
    from tests.conftest import random_image

    root = tmp_path / "tree"
    for k, name in enumerate(FROGS):
        (root / name).mkdir(parents=True)
        for i in range(4):
            random_image(300 + 10 * k + i, size=(48, 40)).save(root / name / f"{i}.png")
    return root


def cli(capsys, *args):
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_calibrate_label_end_to_end(capsys, tmp_path, clip_dir, labelled_tree):
    import pyarrow.parquet as pq

    frogs = tmp_path / "frogs.json"
    frogs.write_text(json.dumps(FROGS))
    evaluation = tmp_path / "evaluation"
    common = ["--descriptors", frogs, "--model", clip_dir, "--workers", "0", "--no-cache"]
    assert cli(capsys, "evaluate", labelled_tree, *common, "--out", evaluation)[0] == 0
    metrics = json.loads((evaluation / "metrics.json").read_text())[str(clip_dir)]
    with np.load(evaluation / "scores.npz") as stored:
        scores, targets = stored["scores_0_descriptors"], stored["targets"]
    # The stored scores are those behind the metrics, and the AURC is a brute-force computation's.
    correct = scores.argmax(axis=1) == targets
    assert metrics["descriptors"]["acc1"] == pytest.approx(correct.mean())
    confidence = torch.softmax(torch.tensor(scores), dim=1).numpy().max(axis=1)
    accuracy = brute_selective(list(confidence), list(correct))
    assert metrics["descriptors"]["selective"]["by_probability"]["aurc"] == pytest.approx(
        sum(1 - a for a in accuracy) / len(accuracy), abs=1e-9
    )
    assert metrics["descriptors"]["probabilities"] == {
        "probabilities": "softmax",
        "temperature": 1.0,
        "calibrated": False,
    }

    code, out, _ = cli(capsys, "calibrate", evaluation, "--held-out", "0.25")
    assert code == 0 and "descriptors: T = " in out
    calibration = evaluation / "calibration.json"
    entries = {e.method: e for e in load_calibrations(calibration)}
    assert set(entries) == {"descriptors", "baseline", "waffle"}
    fitted = entries["descriptors"]
    assert fitted.n_fit == 9 and fitted.n_held_out == 3 and fitted.temperature > 0
    assert fitted.temperature == pytest.approx(
        fit_temperature(scores[np.random.default_rng(0).permutation(12)[:9]],
                        targets[np.random.default_rng(0).permutation(12)[:9]], "softmax"), rel=1e-6
    )  # fmt: skip
    assert (evaluation / "calibration.html").exists()

    # Labelling with the calibration: probabilities at the fitted temperature, every class kept in `top`.
    out_dir = tmp_path / "labels"
    flags = ["--calibration", calibration, "--top", "3", "--order", "review"]
    assert cli(capsys, "label", labelled_tree, *common, "--out", out_dir, *flags)[0] == 0
    table = pq.read_table(out_dir / "labels.parquet")
    record = json.loads(table.schema.metadata[b"descry"])
    assert record["probability_rule"] == {
        "probabilities": "softmax", "temperature": fitted.temperature, "calibrated": True
    }  # fmt: skip
    rows = table.to_pylist()
    for row in rows:
        by_class = {t["class"]: t["score"] for t in row["top"]}
        expected = torch.softmax(
            torch.tensor(list(by_class.values()), dtype=torch.float64) / fitted.temperature, dim=0
        ).numpy()
        assert [t["probability"] for t in row["top"]] == pytest.approx(list(expected), abs=1e-9)
        assert row["labels"] == [{"class": row["label"], "probability": row["probability"]}]
    assert [row["margin"] for row in rows] == sorted(row["margin"] for row in rows)  # review order


def test_label_abstains_or_gives_several_labels(capsys, tmp_path, clip_dir, labelled_tree):
    import pyarrow.parquet as pq

    frogs = tmp_path / "frogs.json"
    frogs.write_text(json.dumps(FROGS))
    common = ["--descriptors", frogs, "--model", clip_dir, "--workers", "0", "--no-cache"]
    # Abstaining: no label, the reason, and the scores and explanation kept.
    unsure = tmp_path / "unsure"
    assert cli(capsys, "label", labelled_tree, *common, "--out", unsure, "--min-margin", "1e9")[0] == 0
    rows = pq.read_table(unsure / "labels.parquet").to_pylist()
    assert all(r["label"] is None and r["abstained"] and r["labels"] == [] for r in rows)
    assert all(r["abstain_reason"].startswith("unsure between ") and "margin" in r["abstain_reason"] for r in rows)
    assert all(len(r["top"]) == 3 and r["descriptors"] for r in rows)

    # Several labels: sigmoid per class, each class passing the threshold.
    many = tmp_path / "many"
    args = ["--probabilities", "sigmoid", "--multi-label", "--threshold", "0"]
    assert cli(capsys, "label", labelled_tree, *common, "--out", many, *args)[0] == 0
    rows = pq.read_table(many / "labels.parquet").to_pylist()
    assert all(len(r["labels"]) == 3 and r["label"] == r["top"][0]["class"] for r in rows)
    for r in rows:
        for entry in r["labels"]:
            score = next(t["score"] for t in r["top"] if t["class"] == entry["class"])
            assert entry["probability"] == pytest.approx(
                torch.sigmoid(torch.tensor(score, dtype=torch.float64)).item(), abs=1e-9
            )


def test_a_calibration_is_refused_for_another_model_and_a_damaged_file_in_one_line(
    capsys, tmp_path, clip_dir, siglip_dir, labelled_tree
):
    frogs = tmp_path / "frogs.json"
    frogs.write_text(json.dumps(FROGS))
    evaluation = tmp_path / "evaluation"
    common = ["--descriptors", frogs, "--workers", "0", "--no-cache"]
    assert cli(capsys, "evaluate", labelled_tree, *common, "--model", clip_dir, "--out", evaluation)[0] == 0
    assert cli(capsys, "calibrate", evaluation)[0] == 0
    code, _, err = cli(
        capsys, "classify", *sorted(labelled_tree.rglob("*.png"))[:1], "--descriptors", frogs, "--model", siglip_dir,
        "--calibration", evaluation / "calibration.json",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "made for another model" in err
    (evaluation / "scores.npz").write_bytes(b"not a zip")
    code, _, err = cli(capsys, "calibrate", evaluation)
    assert code == 2 and err.count("\n") == 1 and "not an evaluation's scores" in err
    code, _, err = cli(capsys, "calibrate", tmp_path)
    assert code == 2 and "holds no scores.npz" in err


def test_classify_says_unsure_between_two_and_which_probabilities(capsys, tmp_path, siglip_dir, labelled_tree):
    frogs = tmp_path / "frogs.json"
    frogs.write_text(json.dumps(FROGS))
    image = sorted(labelled_tree.rglob("*.png"))[0]
    code, out, _ = cli(
        capsys, "classify", image, "--descriptors", frogs, "--model", siglip_dir, "--min-margin", "1e9", "--no-cache"
    )
    assert code == 0 and "probabilities: sigmoid" in out.splitlines()[0]
    assert "no label: unsure between " in out
    code, out, _ = cli(
        capsys, "classify", image, "--descriptors", frogs, "--model", siglip_dir, "--json", "--min-margin", "1e9",
        "--no-cache",
    )  # fmt: skip
    record = json.loads(out)
    assert record["probabilities"] == "sigmoid" and record["abstained"] and record["label"] is None
    assert record["abstain_reason"].startswith(f"unsure between {record['predictions'][0]['class']} and ")


def test_a_fit_that_finds_no_signal_says_so():
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 20, size=(300, 4))
    targets = rng.integers(0, 4, 300)  # labels unrelated to the scores
    found = calibrate(scores, targets, list("abcd"), "softmax", IDENTITY, "h")
    assert found.temperature > 900 and "say almost nothing about the true class" in found.warning
    informative, truth = synthetic(n=2000)
    assert calibrate(informative, truth, list("abcdefghij"), "softmax", IDENTITY, "h").warning is None


def test_the_app_calibrates_the_models_a_file_was_made_for_and_no_other(tmp_path):
    from types import SimpleNamespace

    from explain.confidence import calibrated_where_possible

    scores, targets = synthetic(n=500)
    identity = {**IDENTITY, "prompt_style": {"name": "descry", "prefix": "", "suffix": ""}}
    entry = calibrate(scores, targets, [f"c{k}" for k in range(10)], "softmax", identity, "h")
    rule = calibrated_where_possible(save_calibrations(tmp_path / "c.json", [entry], "ev"))
    softmax_model, sigmoid_model = SimpleNamespace(sigmoid_loss=False), SimpleNamespace(sigmoid_loss=True)
    assert (
        rule("m", softmax_model).temperature == pytest.approx(entry.temperature) and rule("m", softmax_model).calibrated
    )
    assert rule("other", softmax_model) == ProbabilityRule("softmax")
    assert rule("m", sigmoid_model) == ProbabilityRule("sigmoid")  # made for a softmax reading, not this one
