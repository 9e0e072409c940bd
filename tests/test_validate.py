"""Validation: every problem is found and tied to its class; the CLI's exit codes; shipped sets are clean."""

import json
from pathlib import Path

import pytest

from descriptors import check_descriptors, check_structure, load_descriptors
from descriptors.cli import main
from descriptors.tokens import CLIP_CONTEXT, token_counts
from descriptors.validate import DUPLICATE, EMPTY, NAMES_CLASS, STRUCTURE, TOO_LONG

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "assets" / "descriptors").glob("*.json"))
FIXTURE = ROOT / "tests" / "fixtures" / "published_format.json"


def kinds(problems):
    return [(p.kind, p.class_name) for p in problems]


def test_structure_problems_are_all_reported():
    problems = check_structure({"newt": "a crest", "toad": ["warts", 3, None], "frog": {"a": 1}, "ok": ["fine"]})
    assert kinds(problems) == [(STRUCTURE, "newt"), (STRUCTURE, "toad"), (STRUCTURE, "frog")]
    assert [str(p) for p in problems] == [
        "class 'newt': expected a list of strings, got a string",
        "class 'toad': items 1, 2 are not strings",
        "class 'frog': expected a list of strings, got an object",
    ]
    assert kinds(check_structure([1, 2])) == [(STRUCTURE, None)]
    assert check_structure(None)[0].message == "expected a JSON object mapping class names to lists, got null"


def test_each_content_problem_names_its_class():
    long_descriptor = " ".join(["very"] * 80) + " long"
    problems = check_descriptors(
        {
            "tree frog": ["protruding eyes", "a tree frog sitting on a leaf", "Tree_Frogs in a group"],
            "Tree_Frog": ["bright green"],
            "newt": [],
            "toad": ["  "],
            "axolotl": [long_descriptor],
            "frogfish": ["looks like a frog"],  # "frog" is not the class name "frogfish"
        }
    )
    assert kinds(problems) == [
        (NAMES_CLASS, "tree frog"),
        (NAMES_CLASS, "tree frog"),
        (DUPLICATE, "Tree_Frog"),
        (EMPTY, "newt"),
        (EMPTY, "toad"),
        (TOO_LONG, "axolotl"),
    ]
    assert problems[2].message == "class 'Tree_Frog' duplicates 'tree frog' (names match ignoring case and underscores)"
    assert problems[5].message.startswith("class 'axolotl': descriptor 'very very")
    assert problems[5].message.endswith(
        f"makes a prompt of {token_counts(['axolotl, which has ' + long_descriptor])[0]} tokens; CLIP reads 77"
    )


def test_token_limit_is_exact():
    # "newt, which has" + n words: find the longest descriptor that still fits.
    def prompt_tokens(n):
        return token_counts(["newt, which has " + " ".join(["red"] * n)])[0]

    fits = max(n for n in range(40, 80) if prompt_tokens(n) <= CLIP_CONTEXT)
    assert prompt_tokens(fits) == CLIP_CONTEXT
    assert check_descriptors({"newt": [" ".join(["red"] * fits)]}) == []
    assert kinds(check_descriptors({"newt": [" ".join(["red"] * (fits + 1))]})) == [(TOO_LONG, "newt")]


def test_clip_token_ids_are_clips_own():
    # CLIP's published ids: <|startoftext|> 49406, "a" 320, "photo" 1125, "of" 539, "dog" 1929, "." 269,
    # <|endoftext|> 49407.
    from descriptors.tokens import clip_tokenizer

    assert clip_tokenizer()("a photo of a dog.")["input_ids"] == [49406, 320, 1125, 539, 320, 1929, 269, 49407]
    assert token_counts(["a photo of a dog.", "A  Photo of a DOG."]) == [8, 8]
    assert token_counts([]) == []


def run(capsys, path):
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_clean_file(capsys, tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"newt": ["a crest", "spotted skin"]}))
    code, out, err = run(capsys, path)
    assert code == 0 and out == "" and "1 classes, 2 descriptors, no problems" in err


def test_cli_lists_every_problem_and_exits_1(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"newt": [], "Newt": ["a newt's crest"]}))
    code, out, err = run(capsys, path)
    assert code == 1
    assert out.splitlines() == [
        f"{path}: class 'newt' has no descriptors (it will be scored with the template prompt)",
        f"{path}: class 'Newt' duplicates 'newt' (names match ignoring case and underscores)",
        f"{path}: class 'Newt': descriptor \"a newt's crest\" contains the class name",
    ]
    assert "3 problems" in err


def test_cli_structure_problems_exit_1(capsys, tmp_path):
    path = tmp_path / "shape.json"
    path.write_text('["not", "an", "object"]')
    code, out, _ = run(capsys, path)
    assert code == 1 and "expected a JSON object" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"{oops", "not valid JSON"),
        (b"\xff\xfe{", "cannot read"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_cli_unreadable_file_exits_2(capsys, tmp_path, content, message):
    path = tmp_path / "d.json"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, path)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_cli_lone_surrogate_is_a_problem_not_a_traceback(capsys, tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"newt": ["a crest", "\\ud800"]}', encoding="utf-8")
    code, out, err = run(capsys, path)
    assert code == 1 and "class 'newt': item 1 contains a lone surrogate" in out and "Traceback" not in out + err


def test_published_format_loads_unchanged():
    data = load_descriptors(FIXTURE)
    assert data == json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert list(data)[:3] == ["tench", "goldfish", "great white shark"]
    assert data["café façade"][0] == "striped awnings"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sets_pass_validate(capsys, path):
    code, out, err = run(capsys, path)
    assert (code, out) == (0, ""), out
    data = load_descriptors(path)
    for class_name, values in data.items():
        assert 4 <= len(values) <= 8, f"{class_name} has {len(values)} descriptors"


def test_the_expected_sets_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"demo.json", "cifar10.json", "cifar100.json", "caltech256.json"} <= names
    sizes = {p.name: len(load_descriptors(p)) for p in SHIPPED}
    assert (sizes["cifar10.json"], sizes["cifar100.json"], sizes["caltech256.json"]) == (10, 100, 257)
    demo = load_descriptors(ROOT / "assets" / "descriptors" / "demo.json")
    assert {"tree frog", "tailed frog"} <= set(demo)
