"""Reading descriptor files and choosing classes: shapes, loose matching, one-line errors."""

import json

import pytest

from descriptors import DescriptorError, load_descriptors, normalise_name, parse_class_list, select_classes


def write(tmp_path, text, name="d.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_the_published_format(tmp_path):
    # The shape of DCLIP's descriptors_imagenet.json: class name -> list of strings, key order kept.
    data = {"tench": ["a large, olive-green fish", "fins"], "goldfish": ["orange scales"], "great white shark": []}
    assert load_descriptors(write(tmp_path, json.dumps(data))) == data
    assert list(load_descriptors(write(tmp_path, json.dumps(data)))) == ["tench", "goldfish", "great white shark"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 2\)"),
        ('["a", "b"]', "expected a JSON object mapping class names to lists, got a list"),
        ('{"frog": "green"}', "class 'frog': expected a list of strings, got a string"),
        ('{"frog": ["green", 3]}', "class 'frog': item 1 is not a string"),
        (
            '{"frog": {}, "newt": null}',
            r"class 'frog': expected a list of strings, got an object "
            r"\(and 1 more; see python -m descriptors validate\)",
        ),
        ("", "not valid JSON"),
    ],
)
def test_malformed_files_give_one_line(tmp_path, text, message):
    with pytest.raises(DescriptorError, match=message) as caught:
        load_descriptors(write(tmp_path, text))
    assert "\n" not in str(caught.value)
    assert "d.json" in str(caught.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(DescriptorError, match="no such descriptor file"):
        load_descriptors(tmp_path / "absent.json")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"caf\xe9": []}')
    with pytest.raises(DescriptorError, match="cannot read descriptor file"):
        load_descriptors(path)


def test_select_keeps_requested_order_and_matches_loosely():
    data = {"Tree_Frog": ["protruding eyes"], "tailed frog": ["a tail"], "newt": ["a crest"]}
    chosen = select_classes(data, ["tailed frog", "tree frog"])
    assert list(chosen) == ["tailed frog", "tree frog"]
    assert chosen["tree frog"] == ["protruding eyes"]


def test_select_missing_class_gets_no_descriptors():
    assert select_classes({"newt": ["a crest"]}, ["newt", "axolotl"]) == {"newt": ["a crest"], "axolotl": []}


def test_select_all_in_file_order_returns_copies():
    data = {"b": ["x"], "a": ["y"]}
    chosen = select_classes(data)
    assert list(chosen) == ["b", "a"]
    chosen["b"].append("z")
    assert data["b"] == ["x"]


@pytest.mark.parametrize("classes", [[], ["", "  "]])
def test_empty_class_list(classes):
    with pytest.raises(DescriptorError, match="class list is empty"):
        select_classes({"newt": []}, classes)


def test_empty_file_is_an_empty_class_list():
    with pytest.raises(DescriptorError, match="class list is empty"):
        select_classes({})


def test_duplicate_classes_are_rejected():
    with pytest.raises(DescriptorError, match="'Tree Frog' is listed twice .also as 'tree_frog'."):
        select_classes({}, ["tree_frog", "Tree Frog"])
    with pytest.raises(DescriptorError, match="listed twice"):
        select_classes({"newt": [], "Newt": []})


def test_class_list_parsing_and_normalising():
    assert parse_class_list(" tree frog, tailed frog ,,") == ["tree frog", "tailed frog"]
    assert normalise_name("  Tree__Frog ") == "tree frog"


def test_saving_keeps_the_files_mode_or_makes_it_readable(tmp_path):
    import os

    from descriptors.store import save_descriptors

    new = tmp_path / "new.json"
    save_descriptors(new, {"newt": ["a crest"]})
    umask = os.umask(0)
    os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o644 & ~umask
    shared = tmp_path / "shared.json"
    shared.write_text("{}")
    os.chmod(shared, 0o664)
    save_descriptors(shared, {"newt": ["a crest"]})
    assert shared.stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"newt": ["\\ud800 crest"]}', "item 0 contains a lone surrogate"),
        ('{"\\udfff": ["crest"]}', "the name contains a lone surrogate"),
    ],
    ids=["deep", "surrogate-descriptor", "surrogate-class"],
)
def test_hostile_json_is_one_line(tmp_path, text, message):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DescriptorError, match=message) as caught:
        load_descriptors(path)
    assert "\n" not in str(caught.value)


def test_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"newt": ["a crest"]}')
    assert load_descriptors(path) == {"newt": ["a crest"]}
