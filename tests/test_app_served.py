"""The app served on localhost: its API through gradio_client, and the page in headless Chromium."""

import json
import os
import shutil
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

import app
from tests.conftest import random_image
from tests.fake_llm import FakeLLM, answer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def llm_server():
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def served(clip_dir, llm_server, tmp_path_factory):
    """The app on a free local port, with the fake LLM configured as a Space secret would be."""
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "DESCRY_CACHE_DIR")}
    os.environ["OPENAI_BASE_URL"] = llm_server.url
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ["DESCRY_CACHE_DIR"] = str(tmp_path_factory.mktemp("served-cache"))
    blocks = app.build_app(app.Models([str(clip_dir)], device="cpu"))
    blocks.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    yield blocks.local_url
    blocks.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(served):
    return Client(served, verbose=False)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    random_image(21, size=(80, 60)).save(path)
    return path


def test_named_endpoints_are_listed(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/classify", "/generate_descriptors"} <= set(endpoints)
    assert len(endpoints) == 2  # the UI's own events stay private


def test_classify_through_gradio_client(client, photo):
    record = client.predict(
        handle_file(str(photo)), "tree frog, tailed frog", json.dumps({"tree frog": ["protruding eyes"], "tailed frog": ["a tail"]}),
        api_name="/classify",
    )  # fmt: skip
    assert {p["class"] for p in record["predictions"]} == {"tree frog", "tailed frog"}
    assert record["contrast"]["top"]["class"] == record["predictions"][0]["class"]


def test_classify_defaults_to_the_demo_set(client, photo):
    record = client.predict(handle_file(str(photo)), "tabby cat, espresso", api_name="/classify")
    assert all(not p["fallback"] for p in record["predictions"])


def test_classify_rejects_a_non_image_with_a_message(client, tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not an image")
    with pytest.raises(Exception, match="not a recognised image format"):
        client.predict(handle_file(str(bogus)), "newt", api_name="/classify")


def test_generate_through_gradio_client(client, llm_server):
    llm_server.script("axolotl", answer("- feathery gills\n- a wide, flat head"))
    result = client.predict("axolotl", api_name="/generate_descriptors")
    assert result == {"descriptors": {"axolotl": ["feathery gills", "a wide, flat head"]}, "failures": {}}


# --- the page in a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}; .ci/run installs it")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        yield launched
        launched.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url, wait_until="load")
    page.get_by_label("Features, one per line").wait_for(timeout=30_000)
    return page


def type_into(field, text):
    """Replace a field's text the way a person does: Gradio's input event fires on key presses, not on fill()."""
    field.fill(text)
    field.press("End")
    field.type(" ")


def chart_text(page, element_id):
    return page.locator(f"#{element_id}").inner_text()


def wait_for_chart(page, element_id, present, absent=None):
    """Wait until a chart's text shows `present` (and no longer shows `absent`)."""
    condition = f"(e => e && e.innerText.includes({json.dumps(present)})"
    if absent:
        condition += f" && !e.innerText.includes({json.dumps(absent)})"
    page.wait_for_function(f"{condition})(document.querySelector('#{element_id}'))", timeout=30_000)


def upload(page, path):
    page.locator("input[type=file][accept*='image']").first.set_input_files(str(path))
    wait_for_chart(page, "ranking-plot", "espresso")  # scored with the default class list


def set_classes(page, text, absent):
    classes = page.get_by_label("Classes")
    classes.fill(text)
    classes.press("Enter")
    wait_for_chart(page, "ranking-plot", text.split(",")[0].strip(), absent)


def test_page_edit_a_descriptor_and_the_chart_changes(browser, served, photo, tmp_path):
    page = open_page(browser, served)
    upload(page, photo)
    set_classes(page, "tabby cat, lynx, tree frog", absent="espresso")
    before = chart_text(page, "descriptor-plot")
    assert "striped, swirled or spotted fur" in before or "black tufts on the tips of the ears" in before

    page.get_by_label("Edit the features of").click()
    page.get_by_role("option", name="tree frog").click()
    features = page.get_by_label("Features, one per line")
    tree_frog = app.load_descriptors(app.SHIPPED)["tree frog"]
    expect(features).to_have_value("\n".join(tree_frog), timeout=30_000)  # loaded, as a person would wait to see
    type_into(features, "<b>glowing</b> orange eyes\n" + "\n".join(tree_frog[1:]))
    wait_for_chart(page, "descriptor-plot", "<b>glowing</b> orange eyes")
    after = chart_text(page, "descriptor-plot") + chart_text(page, "contrast-plot") + chart_text(page, "ranking-plot")
    assert after != before
    assert "tree frog" in after
    assert page.locator("#descriptor-plot b").count() == 0  # the typed markup is text, not bold
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    page.close()


def test_page_shows_markup_as_text(browser, served, photo):
    page = open_page(browser, served)
    upload(page, photo)
    set_classes(page, "<i>newt</i>, toad", absent="espresso")
    assert "<i>newt</i>" in chart_text(page, "ranking-plot")
    assert page.locator("#ranking-plot i").count() == 0
    page.close()


def test_sessions_do_not_share_edits(browser, served):
    first, second = open_page(browser, served), open_page(browser, served)
    type_into(first.get_by_label("Features, one per line"), "edited only in the first session")
    first.wait_for_timeout(1500)
    first.get_by_label("Edit the features of").click()
    first.get_by_role("option", name="lynx").click()
    first.get_by_role("option", name="lynx").wait_for(state="hidden")
    first.get_by_label("Edit the features of").click()
    first.get_by_role("option", name="tabby cat").click()
    first.wait_for_timeout(1000)
    assert first.get_by_label("Features, one per line").input_value() == "edited only in the first session"
    assert second.get_by_label("Features, one per line").input_value() == "\n".join(
        app.load_descriptors(app.SHIPPED)["tabby cat"]
    )
    third = open_page(browser, served)
    assert "edited only" not in third.get_by_label("Features, one per line").input_value()
    for page in (first, second, third):
        page.close()
