"""The README's screenshots of the Explain tab: 1400×900, a 390×844 phone, and the dark theme.

Not a benchmark: it serves the app with the tiny random-weight CLIP the
tests build (no pretrained weights can be downloaded on the build
machines), opens it in headless Chromium as a visitor would, and saves
what the first screen shows into assets/screenshots/.

    python bench/screenshots.py [--out assets/screenshots]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explain import ExplainerPool  # noqa: E402
from tests.tiny_models import save_tiny_clip  # noqa: E402
from web import Settings, build_app, launch_options  # noqa: E402

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SHOTS = (  # name, width, height, colour scheme, a phone
    ("explain-1400", 1400, 900, "light", False),
    ("explain-phone", 390, 844, "light", True),
    ("explain-dark", 1400, 900, "dark", False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "screenshots")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["DESCRY_CACHE_DIR"] = str(Path(folder) / "cache")
        model = save_tiny_clip(Path(folder) / "tiny-clip")
        settings = Settings.from_environment()
        page = build_app(ExplainerPool([str(model)], device="cpu"), settings)
        page.launch(
            **{**launch_options(settings, None), "server_name": "127.0.0.1"}, prevent_thread_lock=True, quiet=True
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                for name, width, height, scheme, phone in SHOTS:
                    context = browser.new_context(
                        viewport={"width": width, "height": height},
                        color_scheme=scheme,
                        is_mobile=phone,
                        has_touch=phone,
                    )
                    tab = context.new_page()
                    tab.goto(page.local_url + ("?__theme=dark" if scheme == "dark" else ""), wait_until="load")
                    tab.wait_for_function(
                        "(e => e && e.innerText.includes('%'))(document.querySelector('#descry-headline'))",
                        timeout=60_000,
                    )
                    tab.wait_for_timeout(1500)
                    tab.screenshot(path=str(args.out / f"{name}.png"))
                    print(f"wrote {args.out / f'{name}.png'}")
                    context.close()
                browser.close()
        finally:
            page.close()


if __name__ == "__main__":
    main()
