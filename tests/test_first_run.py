"""The first run without a model: `python app.py` as a new user starts it, on a machine that cannot reach the hub.

The app must start serving quickly, print one warning (no retry walls, no traceback), and the page must say
in one panel what to do instead of showing empty charts.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_offline_first_run_serves_quickly_and_says_what_to_do(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "EXPLAIN_MODEL")}
    # A hub that refuses connections, and an empty model cache: what a first run without internet meets.
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), DESCRY_CACHE_DIR=str(tmp_path / "c"))
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        config = None
        while time.monotonic() - started < 60 and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = json.load(response)
                break
            except OSError:
                time.sleep(0.25)
        serving = time.monotonic() - started
        assert config is not None, "the app did not start serving"
        assert serving < 30  # on the 2-core build machine: about 13 s, most of it importing torch and gradio
        panel = next(
            c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "descry-headline"
        )
        assert "The model could not be loaded" in panel and "--model DIR" in panel and "HF_HUB_OFFLINE=1" in panel
        charts = [c["props"] for c in config["components"] if str(c["props"].get("elem_id", "")).endswith("-plot")]
        assert charts and not any(props["visible"] for props in charts)  # no empty chart boxes
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cannot load model 'openai/clip-vit-base-patch32'" in warnings[0]
    assert "model hub cannot be reached" in warnings[0]
    assert "Traceback" not in output and "Retrying" not in output and "ERROR" not in output
