"""The minimal app's handler: engine results become rows; bad input becomes a message, not a crash."""

import json

import gradio as gr
import pytest

import app
from tests.conftest import FROGS, random_image


@pytest.fixture
def holder(clip_dir):
    return app.ExplainerHolder(str(clip_dir))


def test_handler_ranks_and_lists_descriptors(holder):
    ranking, features, note = app.explain_image(holder, random_image(1), "tree frog, tailed frog, axolotl", json.dumps(FROGS))
    assert sorted(row[0] for row in ranking) == ["axolotl", "tailed frog", "tree frog"]
    assert sum(row[1] for row in ranking) == pytest.approx(1.0, abs=1e-3)
    assert {row[0] for row in features} == {row[0] for row in ranking[:2]}
    assert note == "No descriptors, scored with the template prompt: axolotl"


@pytest.mark.parametrize(
    ("image", "classes", "descriptors", "message"),
    [
        (None, "", "{}", "Upload an image first"),
        (random_image(1), "", "{oops", "not valid JSON"),
        (random_image(1), "", "{}", "class list is empty"),
        (random_image(1), "a, A", "{}", "listed twice"),
    ],
)
def test_handler_errors_are_messages(holder, image, classes, descriptors, message):
    with pytest.raises(gr.Error, match=message):
        app.explain_image(holder, image, classes, descriptors)


def test_building_the_app_loads_no_model():
    holder_free = app.build_app("no-such-org/never-loaded")
    assert isinstance(holder_free, gr.Blocks)


def test_unloadable_model_is_a_message_not_a_crash():
    holder = app.ExplainerHolder("no-such-org/no-such-model")
    with pytest.raises(gr.Error, match="cannot load model"):
        app.explain_image(holder, random_image(1), "", json.dumps(FROGS))
