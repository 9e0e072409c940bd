"""Differential descriptors: pair answers in several styles, failures, the merge, the choice of confused pairs,
and the two commands end to end against the local fake LLM server."""

import json

import pytest

from descriptors.cli import main
from descriptors.differential import merge_pairs, most_confused, pair_prompt, parse_pairs
from tests.fake_llm import FakeLLM, answer

A, B = "tree frog", "tailed frog"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- protruding eyes | small eyes\n- bright green skin | brown skin",
            [("protruding eyes", "small eyes"), ("bright green skin", "brown skin")],
        ),
        (
            " sticky toe pads | thin toes\n2. Long Legs | short legs",
            [("sticky toe pads", "thin toes"), ("long Legs", "short legs")],
        ),
        (
            "tree frog: protruding eyes\ntailed frog: tiny eyes\nA: green skin\nB: brown skin",
            [("protruding eyes", "tiny eyes"), ("green skin", "brown skin")],
        ),
        (
            "The tree frog has sticky toe pads, while the tailed frog has webbed feet.\n- long legs vs short legs",
            [("sticky toe pads", "webbed feet"), ("long legs", "short legs")],
        ),
        ("- **big** eyes | small eyes\n- big eyes | small eyes\n- | nothing", [("big eyes", "small eyes")]),
    ],
    ids=["bars", "numbered", "labelled", "prose", "markdown-and-duplicates"],
)
def test_pair_answers_in_several_styles(text, expected):
    assert parse_pairs(text, A, B) == expected


def test_an_answer_without_pairs_gives_none():
    assert parse_pairs("Sorry, I can only describe one animal at a time.", A, B) == []
    assert pair_prompt(A, B).endswith('"feature of the tree frog | matching feature of the tailed frog".\nA:\n-')


def test_merge_adds_each_side_once():
    merged = merge_pairs(
        {"Tree Frog": ["protruding eyes"], "newt": ["a crest"]},
        A,
        B,
        [["protruding eyes", "small eyes"], ["green", "brown"]],
    )
    assert merged == {"Tree Frog": ["protruding eyes", "green"], "newt": ["a crest"], B: ["small eyes", "brown"]}


def test_the_most_confused_pairs_by_hand():
    classes = ["a", "b", "c", "d"]
    confusion = [[5, 3, 0, 1], [4, 6, 0, 0], [0, 2, 7, 0], [0, 0, 0, 9]]  # a<->b 7, b<->c 2, a<->d 1
    assert most_confused(confusion, classes, 2) == [("b", "a", 7), ("c", "b", 2)]
    assert most_confused([[3, 0], [0, 4]], ["x", "y"], 5) == []


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return monkeypatch


def pairs_reply(prompt_class):
    return answer("- protruding eyes | tiny eyes\n- bright green skin | olive brown skin")


def test_differential_command_writes_the_pairs(capsys, env, tmp_path):
    out = tmp_path / "pairs.json"
    with FakeLLM(default=pairs_reply) as server:
        code = main(["differential", "--pairs", "tree frog|tailed frog", "--out", str(out), "--base-url", server.url])
        assert code == 0
        again = main(["differential", "--pairs", "tree frog|tailed frog", "--out", str(out), "--base-url", server.url])
        assert again == 0 and len(server.requests) == 1  # the second answer came from the cache
    assert json.loads(out.read_text()) == [
        {"classes": [A, B], "pairs": [["protruding eyes", "tiny eyes"], ["bright green skin", "olive brown skin"]]}
    ]
    assert "(cached)" in capsys.readouterr().err
    assert (
        main(["differential", "--pairs", "only-one-class", "--out", str(out), "--base-url", "http://127.0.0.1:9"]) == 2
    )


def test_refine_closes_the_loop_from_confusions_to_descriptors(capsys, env, tmp_path):
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    per_class = {
        name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4}
        for name in ("01.tree_frog", "02.tailed_frog", "03.newt")
    }
    metrics = {"m": {"descriptors": {"per_class": per_class, "confusion_matrix": [[2, 2, 0], [1, 3, 0], [0, 0, 4]]}}}
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    (evaluation / "classes.json").write_text(json.dumps({"01.tree_frog": A, "02.tailed_frog": B, "03.newt": "newt"}))
    original = tmp_path / "d.json"
    original.write_text(json.dumps({A: ["protruding eyes"], B: ["a short tail"], "newt": ["a crest"]}))
    new = tmp_path / "new.json"
    with FakeLLM(default=pairs_reply) as server:
        code = main(
            [
                "refine",
                "--evaluation",
                str(evaluation),
                "--descriptors",
                str(original),
                "--top",
                "3",
                "--out",
                str(new),
                "--base-url",
                server.url,
            ]
        )
        assert [r["prompt"].splitlines()[-3] for r in server.requests][0].startswith(
            "Q: What visual features tell a tree frog from a tailed frog"
        )
    assert code == 0
    assert json.loads(new.read_text()) == {
        A: ["protruding eyes", "bright green skin"],
        B: ["a short tail", "tiny eyes", "olive brown skin"],
        "newt": ["a crest"],
    }
    assert json.loads(original.read_text())[A] == ["protruding eyes"]  # never overwritten
    err = capsys.readouterr().err
    assert (
        "confused 3 times: tree frog and tailed frog" in err and "3 differential descriptors added for 1 pairs" in err
    )
    assert (
        main(["refine", "--evaluation", str(evaluation), "--descriptors", str(original), "--out", str(original)]) == 2
    )
