"""Descry's web app: upload an image, name classes, edit their features, see what drove the prediction.

This file is the entry point (and a Hugging Face Space's `app_file`): it
reads the command line, loads the first model so the first visitor does not
wait, builds the page from the `web` package, and launches it. Nothing
else lives here; each feature of the page is a module of `web`.

    python app.py [--model MODEL ...] [--device auto|cpu|cuda|mps] [--precision auto|fp32|bf16|fp16|int8]
                  [--port N] [--share]
"""

from __future__ import annotations

import argparse
import os
import sys

from descriptors.store import default_cache_dir
from explain import ExplainerPool
from explain.cache import open_store
from explain.confidence import calibrated_where_possible
from explain.errors import ExplainError
from explain.models import DEVICES, configured_models
from explain.models.precision import PRECISIONS
from web import Settings, SettingsError, build_app, launch_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Descry web app")
    parser.add_argument(
        "--model", action="append", metavar="MODEL", help="repeat to offer a model picker (default: $EXPLAIN_MODEL)"
    )
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument(
        "--precision", default="auto", choices=PRECISIONS, help="auto: bf16 on CPUs with bf16 units, fp16 on CUDA"
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings.from_environment()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    # The on-disk embedding cache is shared with the CLI; if its file is or becomes unusable, the log says so once.
    store = open_store(default_cache_dir(), lambda message: say(f"warning: {message}; caching in memory only"))
    try:  # each model's probabilities: its own kind, at a calibrated temperature where the owner gave one
        rule = calibrated_where_possible(settings.calibration)
    except ExplainError as error:
        print(f"error: DESCRY_CALIBRATION: {error}", file=sys.stderr, flush=True)
        return 2
    models = ExplainerPool(
        configured_models(args.model),
        args.device,
        store,
        lambda n: say(f"note: {n}"),
        rule=rule,
        precision=args.precision,
    )
    load_error = models.load_error()  # load the first model now, so the first visitor does not wait
    if load_error:
        say(f"warning: {load_error}; the app starts anyway and says how to fix it")
    page = build_app(models, settings, load_error)
    page.launch(**launch_options(settings, args.port, args.share), prevent_thread_lock=True)
    if args.share and not page.share_url:
        # Gradio explains why above; the app itself carries on locally.
        say(f"warning: no public link could be made from this network; the app keeps running at {page.local_url}")
    page.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
