"""The app served on localhost: its API through gradio_client, and the page in headless Chromium."""

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from descriptors import load_descriptors
from explain import ExplainerPool
from tests.conftest import random_image
from tests.fake_llm import FakeLLM, answer
from web import build_app, launch_options
from web.examples import EXAMPLE_CLASSES, EXAMPLES, SHIPPED
from web.settings import Settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
    settings = Settings.from_environment()
    blocks = build_app(ExplainerPool([str(clip_dir)], device="cpu"), settings)
    # Launched as `python app.py` launches it: the same theme, styles and limits.
    blocks.launch(
        **{**launch_options(settings, None), "server_name": "127.0.0.1"}, prevent_thread_lock=True, quiet=True
    )
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
    assert set(endpoints) == {
        "/classify",
        "/generate_descriptors",
        "/heatmap",
        "/differential",
    }  # the UI's own events stay private


def test_classify_through_gradio_client(client, photo):
    record = client.predict(
        handle_file(str(photo)),
        "tree frog, tailed frog",
        json.dumps({"tree frog": ["protruding eyes"], "tailed frog": ["a tail"]}),
        api_name="/classify",
    )
    assert {p["class"] for p in record["predictions"]} == {"tree frog", "tailed frog"}
    assert record["contrast"]["top"]["class"] == record["predictions"][0]["class"]
    assert record["image"] == "photo.png"  # the uploaded file's name, not a placeholder


def test_classify_defaults_to_the_demo_set(client, photo):
    record = client.predict(handle_file(str(photo)), "tabby cat, espresso", api_name="/classify")
    assert all(not p["fallback"] for p in record["predictions"])


def test_classify_rejects_a_non_image_with_a_message(client, tmp_path):
    bogus = tmp_path / "notes.jpg"
    bogus.write_text("not an image")
    with pytest.raises(Exception, match="not a recognised image format"):
        client.predict(handle_file(str(bogus)), "newt", api_name="/classify")


def test_heatmap_through_gradio_client(client, photo):
    result = client.predict(
        handle_file(str(photo)),
        "tree frog, tailed frog",
        "tree frog",
        "protruding eyes",
        json.dumps({"tree frog": ["protruding eyes"], "tailed frog": ["a tail"]}),
        api_name="/heatmap",
    )
    assert (
        result["grid_size"] == [4, 4]
        and len(result["grid"]) == 4
        and result["prompt"] == "tree frog, which has protruding eyes"
    )
    assert result["region"] == [10, 0, 70, 60]  # the photo is 80x60: the centre square
    assert result["method"].startswith("ClearCLIP") and result["family"] == "clip" and result["faithfulness"] is None
    assert "units of its bar" in result["units"]
    checked = client.predict(
        handle_file(str(photo)), "tree frog, tailed frog", "tree frog", "protruding eyes", "", False, "", True,
        api_name="/heatmap",
    )  # fmt: skip
    found = checked["faithfulness"]
    assert {"deletion_ratio", "insertion_ratio", "deletion_auc", "seconds"} <= set(found) and found["seeds"] == 3


def test_differential_through_gradio_client(client, llm_server):
    llm_server.script("", answer("- webbed hind feet | short front legs"))
    result = client.predict("bullfrog", "tree frog", "", api_name="/differential")
    assert result["pairs"] == [["webbed hind feet", "short front legs"]]


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


def open_page(browser, url, width=1400, height=900, context=None):
    page = context.new_page() if context is not None else browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="load")
    page.get_by_label("Features, one per line").wait_for(timeout=30_000)
    wait_for_text(page, "descry-headline", "%")  # the first example is explained as the page opens
    wait_for_text(page, "ranking-plot", "probability")
    return page


def type_into(field, text):
    """Replace a field's text the way a person does: Gradio's input event fires on key presses, not on fill()."""
    field.fill(text)
    field.press("End")
    field.type(" ")


def chart_text(page, element_id):
    return page.locator(f"#{element_id}").inner_text()


def wait_for_text(page, element_id, present, absent=None, timeout=30_000):
    """Wait until an element's text shows `present` (and no longer shows `absent`)."""
    condition = f"(e => e && e.innerText.includes({json.dumps(present)})"
    if absent:
        condition += f" && !e.innerText.includes({json.dumps(absent)})"
    page.wait_for_function(f"{condition})(document.querySelector('#{element_id}'))", timeout=timeout)


wait_for_chart = wait_for_text


def upload(page, path):
    page.locator("input[type=file][accept*='image']").first.set_input_files(str(path))
    wait_for_text(page, "descry-headline", f"{Path(path).name}: scored")


def set_classes(page, text, absent):
    classes = page.get_by_label("Classes")
    classes.fill(text)
    classes.press("Enter")
    wait_for_chart(page, "ranking-plot", text.split(",")[0].strip(), absent)


def pick_class(page, name):
    page.get_by_label("Edit the features of").click()
    page.get_by_role("option", name=name).click()
    page.get_by_role("option", name=name).wait_for(state="hidden")


def test_page_opens_with_an_example_explained_and_a_headline(browser, served):
    page = open_page(browser, served)
    headline = page.locator("#descry-headline").inner_text()
    ranking = chart_text(page, "ranking-plot")
    assert all(name in ranking for name in ("tabby cat", "lynx", "tree frog"))
    top = page.locator("#descry-headline .descry-answer").inner_text()
    assert top.rsplit(" ", 1)[0] in {"tabby cat", "lynx", "tree frog"} and top.endswith("%")
    assert "template alone" in headline
    # The headline and the charts are on screen without scrolling.
    assert page.locator("#descry-headline").bounding_box()["y"] < 300
    page.close()


def test_page_edit_a_descriptor_and_the_chart_changes(browser, served, photo, tmp_path):
    page = open_page(browser, served, height=1100)
    upload(page, photo)
    set_classes(page, "tabby cat, lynx, tree frog, espresso", absent="zzz")
    before = chart_text(page, "descriptor-plot")
    pick_class(page, "tree frog")
    features = page.get_by_label("Features, one per line")
    tree_frog = load_descriptors(SHIPPED)["tree frog"]
    expect(features).to_have_value("\n".join(tree_frog), timeout=30_000)  # loaded, as a person would wait to see
    type_into(features, "<b>glowing</b> orange eyes\n" + "\n".join(tree_frog[1:]))
    wait_for_chart(page, "descriptor-plot", "<b>glowing</b> orange")
    after = chart_text(page, "descriptor-plot") + chart_text(page, "contrast-plot") + chart_text(page, "ranking-plot")
    assert after != before and "tree frog" in after
    assert page.locator("#descriptor-plot b").filter(has_text="glowing").count() == 0  # the typed markup is text
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    page.close()


def test_page_shows_markup_as_text(browser, served, photo):
    page = open_page(browser, served)
    upload(page, photo)
    set_classes(page, "<i>newt</i>, toad", absent="tabby cat")
    assert "<i>newt</i>" in chart_text(page, "ranking-plot")
    assert page.locator("#ranking-plot i").count() == 0
    page.close()


def test_sessions_do_not_share_edits(browser, served):
    first, second = open_page(browser, served), open_page(browser, served)
    type_into(first.get_by_label("Features, one per line"), "edited only in the first session")
    wait_for_chart(first, "descriptor-plot", "edited only in the first")
    pick_class(first, "lynx")
    pick_class(first, "tabby cat")
    expect(first.get_by_label("Features, one per line")).to_have_value("edited only in the first session")
    assert second.get_by_label("Features, one per line").input_value() == "\n".join(
        load_descriptors(SHIPPED)["tabby cat"]
    )
    third = open_page(browser, served)
    assert "edited only" not in third.get_by_label("Features, one per line").input_value()
    for page in (first, second, third):
        page.close()


# --- what a person sees while working ----------------------------------------------------------------------


def test_the_no_llm_message_stays_on_screen(browser, served, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL")
    page = open_page(browser, served)
    page.get_by_role("button", name="Generate with LLM").click()  # tabby cat, lynx and tree frog all have descriptors
    message = page.locator("#descry-message")
    expect(message).to_contain_text("Every class already has descriptors", timeout=10_000)
    set_classes(page, "tabby cat, axolotl", absent="lynx")
    page.get_by_role("button", name="Generate with LLM").click()
    expect(message).to_contain_text("No LLM is configured", timeout=10_000)
    page.wait_for_timeout(3000)  # the follow-on re-score must not have replaced it
    expect(message).to_contain_text("No LLM is configured")
    assert message.locator(".descry-error").count() == 1
    box = message.bounding_box()
    assert box["y"] + box["height"] <= 900  # visible without scrolling at 1400×900
    page.close()


def test_an_error_after_a_bad_upload_is_in_view(browser, served, tmp_path):
    bogus = tmp_path / "holiday.jpg"
    bogus.write_text("this is text, not a photo")
    page = open_page(browser, served)
    page.locator("input[type=file][accept*='image']").first.set_input_files(str(bogus))
    message = page.locator("#descry-message")
    expect(message).to_contain_text("Could not explain", timeout=30_000)
    box = message.bounding_box()
    assert box["y"] + box["height"] <= 900
    assert (
        "not a recognised image format" in message.inner_text() and "/tmp/" not in message.inner_text()
    )  # no server paths
    page.close()


def test_a_burst_of_keystrokes_never_hides_a_chart(browser, served):
    page = open_page(browser, served)
    features = page.get_by_label("Features, one per line")
    # Record, every 20 ms, whether any chart is missing or covered by a progress overlay.
    page.evaluate(
        """() => {
            window.__hidden = [];
            window.__watch = setInterval(() => {
                for (const id of ["descriptor-plot", "contrast-plot", "ranking-plot"]) {
                    const block = document.getElementById(id);
                    const plot = block && block.querySelector(".js-plotly-plot");
                    const overlay = block && [...block.querySelectorAll(".wrap")]
                        .some(w => w.offsetHeight > 0 && /pending|generating/.test(w.className));
                    if (!plot || plot.getBoundingClientRect().height < 50 || overlay) { window.__hidden.push(id); }
                }
            }, 20);
        }"""
    )
    features.click()
    features.press("End")
    features.press("Enter")
    features.press_sequentially("webbed hind", delay=90)  # ten keystrokes at a brisk typing pace
    wait_for_chart(page, "descriptor-plot", "webbed hind", timeout=30_000)
    hidden = page.evaluate("() => { clearInterval(window.__watch); return window.__hidden; }")
    assert hidden == []
    page.wait_for_timeout(1000)
    assert "webbed hind" in chart_text(page, "descriptor-plot") and "webbed hin\n" not in chart_text(
        page, "descriptor-plot"
    )
    page.close()


def test_what_tells_the_top_class_from_the_runner_up(browser, served, llm_server):
    # The pair prompt carries no descriptor question, so the fake server files it under the empty class name.
    llm_server.script("", answer("- a pale, mottled coat | a coat of dark stripes\n- tufted ear tips | rounded ears"))
    page = open_page(browser, served)
    page.get_by_role("button", name="What tells the top class from the runner-up?").click()
    expect(page.locator("#descry-message")).to_contain_text("2 pairs of features that tell", timeout=30_000)
    wait_for_chart(page, "pairs-plot", "What tells")
    assert "tufted ear tips" in chart_text(page, "pairs-plot")
    page.get_by_role("button", name="Add to descriptors").click()
    expect(page.locator("#descry-message")).to_contain_text("Added 4 descriptors", timeout=30_000)
    wait_for_chart(page, "descriptor-plot", "tufted ear tips")
    page.close()


def test_picking_a_descriptor_shows_its_heatmap(browser, served):
    page = open_page(browser, served)
    page.get_by_text("Where in the image does a descriptor match?").click()
    picker = page.locator("#descry-heatmap").get_by_role("combobox", name="Descriptor")
    picker.click()
    page.get_by_role("option").first.click()
    expect(page.locator("#descry-heatmap-image img")).to_be_visible(timeout=30_000)
    expect(page.locator("#descry-heatmap-caption")).to_contain_text("matches for", timeout=30_000)
    expect(page.locator("#descry-heatmap-caption")).to_contain_text("the same units as its bar")
    page.locator("#descry-faithful").get_by_role("checkbox").check()
    expect(page.locator("#descry-heatmap-caption")).to_contain_text("Faithfulness: ", timeout=60_000)
    expect(page.locator("#descry-heatmap-caption")).to_contain_text("random orders")
    page.close()


def test_reload_keeps_the_edits_and_a_link_restores_them_elsewhere(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_page(browser, served, context=context)
    set_classes(page, "tabby cat, lynx, bullfrog", absent="tree frog")
    pick_class(page, "lynx")
    type_into(page.get_by_label("Features, one per line"), "a very particular lynx feature")
    wait_for_chart(page, "descriptor-plot", "a very particular lynx")
    page.reload(wait_until="load")
    wait_for_chart(page, "ranking-plot", "bullfrog")
    wait_for_chart(page, "descriptor-plot", "a very particular lynx")  # the browser remembered the session
    page.get_by_role("button", name="Copy link").click()
    link = page.locator("#descry-link textarea")
    expect(link).to_have_value(re.compile(r"\?s=[A-Za-z0-9_-]+$"), timeout=10_000)
    url = link.input_value()
    context.close()
    fresh = browser.new_context(viewport={"width": 1400, "height": 900})  # nothing remembered here
    shared = open_page(browser, url, context=fresh)
    wait_for_chart(shared, "ranking-plot", "bullfrog")
    wait_for_chart(shared, "descriptor-plot", "a very particular lynx")
    assert shared.get_by_label("Classes").input_value() == "tabby cat, lynx, bullfrog"
    expect(shared.locator("#descry-message")).to_contain_text("Opened a shared explanation")
    fresh.close()


@pytest.mark.parametrize("state", ["not-a-real-state", "A" * 7000])
def test_a_bad_link_says_so_and_shows_the_demo(browser, served, state):
    context = browser.new_context()
    page = open_page(browser, f"{served}?s={state}", context=context)
    expect(page.locator("#descry-message")).to_contain_text("Could not open the link", timeout=10_000)
    assert page.get_by_label("Classes").input_value() == EXAMPLE_CLASSES["tabby-cat"]
    context.close()


def test_screens_at_three_sizes_and_both_themes(browser, served, tmp_path):
    """Screenshots a person looks at; here, nothing may be cut off sideways at any size."""
    for width, height in ((1400, 900), (1920, 1080), (390, 844)):
        for scheme in ("light", "dark"):
            context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
            page = open_page(browser, served + ("?__theme=dark" if scheme == "dark" else ""), width, height, context)
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= width + 1, f"{width}x{height} {scheme}: the page scrolls sideways ({wide} px)"
            page.screenshot(path=str(tmp_path / f"page-{width}-{scheme}.png"), full_page=True)
            context.close()


# --- what a person sees, round 2 ------------------------------------------------------------------------------

BARS_AND_LABELS = """(id) => {
    // Every bar as drawn, with the hover text the browser holds for it and the tick label nearest its middle.
    const plot = document.querySelector(`#${id} .js-plotly-plot`);
    const ticks = [...plot.querySelectorAll('g.ytick text')].map(t => {
        const box = t.getBoundingClientRect();
        return {text: t.textContent, middle: box.top + box.height / 2};
    });
    const bars = [];
    plot.querySelectorAll('g.trace.bars').forEach((trace, c) => {
        trace.querySelectorAll('g.point path').forEach((path, i) => {
            const box = path.getBoundingClientRect();
            const middle = box.top + box.height / 2;
            const nearest = ticks.reduce((a, b) => Math.abs(a.middle - middle) <= Math.abs(b.middle - middle) ? a : b);
            bars.push({hover: plot._fullData[c].customdata[i], label: nearest.text, fill: path.style.fill});
        });
    });
    return bars;
}"""


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_each_pair_label_is_beside_its_own_bar(browser, served, llm_server):
    llm_server.script("", answer("- a pale, mottled coat | a coat of dark stripes\n- tufted ear tips | rounded ears"))
    page = open_page(browser, served)
    page.get_by_role("button", name="What tells the top class from the runner-up?").click()
    wait_for_chart(page, "pairs-plot", "What tells")
    page.wait_for_timeout(500)
    bars = page.evaluate(BARS_AND_LABELS, "pairs-plot")
    assert len(bars) == 4
    for bar in bars:
        # "lynx: tufted ear tips<br>score ..." beside the label "lynx: tufted ear tips", never its partner's.
        assert squeeze(bar["hover"].split("<br>")[0]) == squeeze(bar["label"])
    page.close()


def test_a_class_keeps_its_colour_when_the_ranking_flips(browser, served, clip_dir):
    from explain.charts import class_colour

    # Find, with the same model and image, an edit that swaps the top two classes.
    explainer = ExplainerPool([str(clip_dir)], device="cpu").get()
    image = str(EXAMPLES[-1])  # tabby-cat.jpg, the page's first example
    shipped = load_descriptors(SHIPPED)
    classes = ["tabby cat", "lynx", "tree frog"]
    before = explainer.classify(image, {c: shipped[c] for c in classes})
    top, second = before.predictions[0].name, before.predictions[1].name
    candidates = [d for values in shipped.values() for d in values]
    flip = next(
        d
        for d in candidates
        if explainer.classify(image, {**{c: shipped[c] for c in classes}, top: [d]}).predictions[0].name != top
    )

    def colours(page):
        return page.evaluate(
            """(names) => Object.fromEntries(names.map(n => {
                const tspan = [...document.querySelectorAll('#descriptor-plot g[class$="tick"] text tspan')]
                    .find(t => t.textContent.trim() === n);
                return [n, tspan ? getComputedStyle(tspan).fill : null];
            }))""",
            [top, second],
        )

    page = open_page(browser, served)
    first = colours(page)
    answer_colour = page.locator("#descry-headline .descry-answer").evaluate("e => getComputedStyle(e).color")
    pick_class(page, top)
    type_into(page.get_by_label("Features, one per line"), flip)
    wait_for_text(page, "descry-headline", second)
    page.wait_for_timeout(800)
    assert page.locator("#descry-headline .descry-answer").inner_text().startswith(second)  # the ranks swapped
    assert colours(page) == first  # and every class kept its colour
    if class_colour(top) != class_colour(second):  # the headline takes the new top class's colour
        assert (
            page.locator("#descry-headline .descry-answer").evaluate("e => getComputedStyle(e).color") != answer_colour
        )
    expected = {name: class_colour(name).lstrip("#").lower() for name in (top, second)}
    for name, fill in first.items():
        red, green, blue = (int(v) for v in re.findall(r"\d+", fill)[:3])
        assert f"{red:02x}{green:02x}{blue:02x}" == expected[name]
    page.close()


def test_a_buttons_message_is_in_view_where_the_button_is(browser, served):
    page = open_page(browser, served)
    reset = page.get_by_role("button", name="Reset", exact=True)
    reset.scroll_into_view_if_needed()
    reset.click()
    message = page.locator("#descry-message .descry-message")
    expect(message).to_contain_text("Back to the shipped descriptors", timeout=10_000)
    box = message.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 900  # in the viewport, wherever the page is scrolled
    page.locator("#descry-message .descry-dismiss").click()  # and it can be closed
    expect(message).to_be_hidden()
    page.close()


def test_remove_class_says_what_it_removed_and_undo_brings_it_back(browser, served):
    page = open_page(browser, served)
    pick_class(page, "lynx")
    page.get_by_role("button", name="Remove class").click()
    expect(page.locator("#descry-message")).to_contain_text("Removed lynx", timeout=10_000)
    expect(page.get_by_label("Classes")).to_have_value("tabby cat, tree frog")
    page.get_by_role("button", name="Undo remove").click()
    expect(page.locator("#descry-message")).to_contain_text("Brought back lynx", timeout=10_000)
    expect(page.get_by_label("Classes")).to_have_value("tabby cat, lynx, tree frog")
    page.close()


def test_reload_of_an_example_with_edits_brings_the_example_back(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_page(browser, served, context=context)
    page.locator("#descry-examples").get_by_text("espresso, cappuccino, dahlia").click()
    wait_for_text(page, "descry-headline", "espresso.jpg")
    pick_class(page, "espresso")
    type_into(page.get_by_label("Features, one per line"), "a crema of a very particular colour")
    wait_for_chart(page, "descriptor-plot", "very particular")
    page.wait_for_timeout(800)
    page.reload(wait_until="load")
    wait_for_text(page, "descry-headline", "espresso.jpg")  # the espresso, not the first example
    wait_for_chart(page, "descriptor-plot", "very particular")
    assert page.get_by_label("Classes").input_value() == "espresso, cappuccino, dahlia"
    context.close()


def test_reload_after_an_upload_says_the_image_was_not_kept(browser, served, photo):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_page(browser, served, context=context)
    upload(page, photo)
    page.wait_for_timeout(800)
    page.reload(wait_until="load")
    page.get_by_label("Features, one per line").wait_for(timeout=30_000)
    expect(page.locator("#descry-message")).to_contain_text("not the image", timeout=30_000)
    assert "%" not in page.locator("#descry-headline").inner_text()  # no explanation of another picture
    context.close()


@pytest.mark.parametrize("width, height", [(390, 844), (740, 1000), (915, 412)])
def test_a_phone_or_tablet_shows_the_answer_before_the_editor(browser, served, width, height):
    """A phone upright, a small tablet (where the two columns once wrapped, the results after the editor and
    the examples) and a phone on its side: the headline and the chart never come after the editor."""
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=True, has_touch=True)
    page = open_page(browser, served, width, height, context)
    box = page.locator("#descry-headline .descry-answer").bounding_box()
    chart = page.locator("#descriptor-plot").bounding_box()
    editor = page.get_by_label("Features, one per line").bounding_box()
    examples = page.locator("#descry-examples").bounding_box()
    side_by_side = box["x"] > editor["x"] + editor["width"] / 2
    assert side_by_side or (box["y"] < editor["y"] and chart["y"] < editor["y"] and box["y"] < examples["y"])
    if width < 768:
        assert not side_by_side and box["y"] + box["height"] <= height  # on the first screen
    else:
        assert side_by_side and box["y"] < height
    assert page.locator("#descriptor-plot .modebar-container").is_hidden()  # no toolbar over the title
    context.close()


def test_kept_work_survives_a_server_restart(browser, clip_dir, tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("DESCRY_CACHE_DIR", str(tmp_path / "cache"))  # where the key the browser's copy needs is kept
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def start():
        settings = Settings.from_environment()
        blocks = build_app(ExplainerPool([str(clip_dir)], device="cpu"), settings)
        options = {**launch_options(settings, port), "server_name": "127.0.0.1"}
        blocks.launch(**options, prevent_thread_lock=True, quiet=True)
        return blocks

    server = start()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = open_page(browser, server.local_url, context=context)
        type_into(page.get_by_label("Features, one per line"), "kept across a restart")
        wait_for_chart(page, "descriptor-plot", "kept across a restart")
        page.wait_for_timeout(800)
        server.close()
        server = start()
        page.reload(wait_until="load")
        wait_for_chart(page, "descriptor-plot", "kept across a restart")
    finally:
        context.close()
        server.close()


def test_a_refused_drop_on_the_image_leaves_one_message(browser, served, tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        packed.writestr("a.txt", "not an image")
    page = open_page(browser, served)
    page.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#descry-message .descry-message")).to_be_visible(timeout=10_000)
    page.locator("input[type=file][accept*='image']").first.set_input_files(str(archive))
    expect(page.locator(".toast-item").first).to_be_visible(timeout=10_000)  # Gradio's own "Invalid file type"
    expect(page.locator("#descry-message .descry-message")).to_be_hidden()  # and ours steps aside
    page.close()


def image_zip(path, top: str, classes, count: int, size, stem: str = ""):
    """A zip of an ImageFolder tree: `top/CLASS/STEMki.png`, `count` random PNGs of `size` per class."""
    import io

    with zipfile.ZipFile(path, "w") as packed:
        for k, name in enumerate(classes):
            for i in range(count):
                buffer = io.BytesIO()
                random_image(1000 * k + i, size=size).save(buffer, format="PNG")
                packed.writestr(f"{top}/{name}/{stem}{k}{i}.png", buffer.getvalue())
    return path


WATCH_STATUS = """() => {
    window.__said = [];
    window.__status = setInterval(() => {
        const line = (document.querySelector('#eval-status') || {}).innerText || '';
        if (line.trim() && window.__said[window.__said.length - 1] !== line.trim()) window.__said.push(line.trim());
    }, 20);
}"""


def test_the_evaluate_tab_says_what_it_is_doing_while_it_runs(browser, served, tmp_path):
    """What a visitor sees between the click and the table: the stage and how far it is, in the status line."""
    archive = image_zip(tmp_path / "many.zip", "pond", ("newt", "toad"), 150, (320, 240))
    page = open_page(browser, served)
    page.get_by_role("tab", name="Evaluate a dataset").click()
    page.locator("input[type=file][accept*='.zip']").set_input_files(str(archive))
    expect(page.get_by_text("many.zip")).to_be_visible(timeout=30_000)
    page.evaluate(WATCH_STATUS)
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#eval-status")).to_contain_text("Evaluated 300 images", timeout=120_000)
    seen = page.evaluate("() => { clearInterval(window.__status); return window.__said; }")
    counted = [line for line in seen if re.fullmatch(r"Embedding images with \S+: [\d,]+ of 300 \(\d+%\)", line)]
    assert counted, seen  # the stage and its count, not a bare timer
    first = next(k for k, line in enumerate(seen) if line == "Starting…")
    assert not any(line.startswith("processing") for line in seen[first:]), "\n".join(seen)  # no bare timer
    page.close()


def test_a_sample_of_an_evaluation_opens_in_explain(browser, served, tmp_path):
    archive = image_zip(tmp_path / "frogs.zip", "frogs", ("tree_frog", "tailed frog"), 3, (40, 32), "sample-")
    page = open_page(browser, served)
    page.get_by_role("tab", name="Evaluate a dataset").click()
    page.locator("input[type=file][accept*='.zip']").set_input_files(str(archive))
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#eval-status")).to_contain_text("Evaluated 6 images", timeout=60_000)
    assert "n/a" in page.locator("#eval-metrics").inner_text() and "%" in page.locator("#eval-metrics").inner_text()
    page.locator("#eval-gallery img").first.click()
    wait_for_text(page, "descry-headline", "sample-")  # the sample, explained in the first tab
    assert page.get_by_label("Classes").input_value() == "tailed frog, tree frog"
    page.close()
