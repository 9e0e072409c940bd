"""Keystroke to updated chart, measured in a real browser on the full-size ViT-B/32 architecture.

Builds ViT-B/32 at its real sizes (`CLIPConfig()` defaults) with random
weights, saves it, serves the app on 127.0.0.1, and drives headless
Chromium as a person would: it picks a class in the editor and types a new
descriptor one key at a time, waiting after each key until the descriptor
chart shows exactly the text typed so far (spaces are typed but not timed:
a trailing space changes no descriptor). It prints the median and spread of
keystroke-to-chart times (target: median <= 350 ms for the demo set) beside
the server's own scoring time for the same edits, so the browser and
network share is visible. A script, not a test: timings on shared machines
are too noisy to assert on.

    python bench/bench_live_edit.py [--keys 24]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import web.editor  # noqa: E402
from explain import ExplainerPool  # noqa: E402
from tests.tiny_models import full_size_clip  # noqa: E402
from web import Settings, build_app, launch_options  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TYPED = "webbed hind feet and a pale belly"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=24, help="keystrokes to time (default: 24)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        model, processor = full_size_clip()
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        os.environ["DESCRY_CACHE_DIR"] = str(Path(folder) / "cache")
        models = ExplainerPool([folder], device="cpu")
        models.load_error()
        server_ms: list[float] = []
        explain = web.editor.explain_image  # what each keystroke's request calls

        def timed_explain(*call, **options):
            started = time.perf_counter()
            result = explain(*call, **options)
            server_ms.append((time.perf_counter() - started) * 1000)
            return result

        web.editor.explain_image = timed_explain
        settings = Settings.from_environment()
        blocks = build_app(models, settings)
        blocks.launch(
            **{**launch_options(settings, None), "server_name": "127.0.0.1"}, prevent_thread_lock=True, quiet=True
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(blocks.local_url, wait_until="load")
                page.wait_for_function(
                    "(e => e && e.innerText.includes('%'))(document.querySelector('#descry-headline'))", timeout=120_000
                )
                features = page.get_by_label("Features, one per line")
                features.click()
                features.press("End")
                features.press("Enter")
                page.wait_for_timeout(1500)
                server_ms.clear()
                times = []
                typed = ""
                for key in TYPED[: args.keys]:
                    typed += key
                    started = time.perf_counter()
                    features.press(key if key != " " else "Space")
                    if key == " ":
                        # A trailing space changes no descriptor (lines are trimmed): there is nothing to wait for,
                        # so a space is typed but never timed.
                        page.wait_for_timeout(250)
                        continue
                    # Wait for the exact text typed so far. A label's wrapped lines are separate text runs, so
                    # compare without whitespace: the key just typed is not whitespace, so this is still exact.
                    try:
                        page.wait_for_function(
                            "([t]) => [...document.querySelectorAll('#descriptor-plot g[class$=\"tick\"] text')]"
                            ".some(e => e.textContent.replace(/\\s+/g, '') === t.replace(/\\s+/g, ''))",
                            arg=[typed],
                            timeout=30_000,
                            polling="raf",
                        )
                    except Exception:
                        sys.exit(f"the chart never showed {typed!r}; the server's log above may say why")
                    times.append((time.perf_counter() - started) * 1000)
                    page.wait_for_timeout(250)  # a person's pause between keys; lets each update land alone
                browser.close()
        finally:
            blocks.close()
            web.editor.explain_image = explain
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        "ViT-B/32 sizes, random weights"
    )
    print(f"demo set, {len(times)} non-space keystrokes typed one at a time in headless Chromium at 1400x900")
    quartiles = statistics.quantiles(times, n=4)
    print(
        f"keystroke to updated chart: median {statistics.median(times):.0f} ms "
        f"(quartiles {quartiles[0]:.0f}-{quartiles[2]:.0f}, max {max(times):.0f})  (target median <= 350 ms)"
    )
    print(f"server scoring per edit:    median {statistics.median(server_ms):.0f} ms over {len(server_ms)} requests")


if __name__ == "__main__":
    main()
