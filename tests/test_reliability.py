"""Reliability round 2: each case a hostile visitor or a careless operator tried, tried again.

Every case is either served within its limits or refused with one clear line; nothing is lost, nothing is
written twice, and nothing grows past its stated bound. The numbers in the comments are the issue's.
"""

import base64
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import gradio as gr
import numpy as np
import pyarrow.parquet as pq
import pytest

from descriptors import DescriptorError
from descriptors.generate import GenerationCache, LLMError, generate, make_llm
from descriptors.limits import RequestLimits
from explain import Explainer, ExplainerPool, ExplainError, load_model
from explain.cache import EmbeddingStore, open_store
from explain.errors import HeatmapsUnavailable, ModelLoadError
from explain.labelling.outputs import read_parts, write_part
from explain.labelling.run import exclusive
from tests.conftest import FROGS, random_image
from tests.fake_llm import FakeLLM, answer
from tests.test_labelling import label
from web import api, editor, evaluate_tab, llm_gate, scoring, sharing, tell_apart
from web.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
LIMITS = RequestLimits()


def llm_for(server, secret=""):
    llm = make_llm("test-model", server.url, secret or None, timeout=5.0, max_retries=0)
    llm.max_prompt_chars = llm_gate.MAX_PROMPT_CHARS
    return llm


@pytest.fixture
def models(clip_dir):
    return ExplainerPool([str(clip_dir)], device="cpu")


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "frog.png"
    random_image(4, size=(64, 48)).save(path)
    return str(path)


# --- 1. class names on the way to the owner's LLM ------------------------------------------------------------


def test_long_class_names_never_reach_the_llm(models, image_file):
    with FakeLLM() as server:
        llm = lambda: llm_for(server)  # noqa: E731
        names = ", ".join("x" * 200_000 + str(k) for k in range(20))  # 20 names of 200,000 characters
        with pytest.raises(gr.Error, match="characters long; the limit is"):
            api.api_generate(names, llm, None)
        with pytest.raises(gr.Error, match="longer than the 100 the app takes"):
            api.api_differential("a" * 1_000_000, "b" * 1_000_000, llm, None)
        long_class = f"tree frog, {'y' * 10_000}"
        figure, pending, message = tell_apart.tell_apart(models, LIMITS, None, image_file, long_class, FROGS, llm)
        assert figure is None and pending is None and "longer than the 100 the app takes" in message
        assert server.requests == []  # not one request was sent
    # Even an LLM asked directly with too long a prompt refuses before sending.
    with FakeLLM() as server:
        with pytest.raises(LLMError, match="this app sends at most 4,000"):
            llm_for(server).complete("q" * 5000)
        assert server.requests == []


def test_what_tells_apart_takes_the_top_two_from_the_server_not_the_page(models, image_file):
    with FakeLLM(default=lambda name: answer("- big eyes | small eyes")) as server:
        figure, pending, _ = tell_apart.tell_apart(
            models, LIMITS, None, image_file, "tree frog, tailed frog", FROGS, lambda: llm_for(server)
        )
    classes = {pending["a"], pending["b"]}
    assert classes == {"tree frog", "tailed frog"} and figure is not None
    assert all(len(request["prompt"]) < 2000 for request in server.requests)


# --- 2. the per-visitor limit cannot be dodged with new sessions -----------------------------------------------


class FakeRequest:
    def __init__(self, session, host, forwarded=None):
        self.session_hash = session
        self.client = type("Client", (), {"host": host})()
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}


def test_new_sessions_from_one_address_share_its_limit():
    gate = llm_gate.LLMGate(per_visitor=5, per_minute=30)
    refusals = [gate.refusal(llm_gate.visitor_keys(FakeRequest(f"s{k}", "10.0.0.7")), 1) for k in range(25)]
    assert refusals[:5] == [None] * 5
    assert all("This address has asked the LLM 5 times" in r for r in refusals[5:])
    assert gate.refusal(llm_gate.visitor_keys(FakeRequest("fresh", "10.0.0.8")), 1) is None  # others still served


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw():
    spoofed = FakeRequest("s", "10.1.1.1", forwarded="1.2.3.4, 203.0.113.9")  # the client wrote 1.2.3.4 itself
    assert llm_gate.visitor_keys(spoofed, proxy_hops=1) == ("session:s", "address:203.0.113.9")
    assert llm_gate.visitor_keys(spoofed, proxy_hops=0) == ("session:s", "address:10.1.1.1")  # no proxy trusted
    assert Settings.from_environment({"DESCRY_PROXY_HOPS": "1"}).proxy_hops == 1


# --- 3. an answer that echoes the key --------------------------------------------------------------------------


def test_an_answer_echoing_the_key_is_redacted_before_it_is_kept(tmp_path, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    reply = answer(f"- a key: Bearer {secret}\n- striped fur")
    with FakeLLM(default=lambda name: reply) as server:
        cache = GenerationCache(tmp_path / "answers.sqlite3")
        result = generate(["lynx"], llm_for(server, secret), cache)
    text = json.dumps(result.descriptors)
    assert secret not in text and "a key: Bearer" in text  # the line is kept, the key is not
    assert secret not in json.dumps(cache.get("test-model", "lynx"))
    with FakeLLM(default=lambda name: reply) as server:
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        monkeypatch.setenv("DESCRY_CACHE_DIR", str(tmp_path / "c"))
        out = tmp_path / "written.json"
        from descriptors.cli import main

        main(["generate", "--classes", "lynx", "--out", str(out), "--base-url", server.url, "--no-cache"])
    assert secret not in out.read_text() and "a key: Bearer" in out.read_text()


# --- 4. class names and the embedding cache ---------------------------------------------------------------------


def test_a_thousand_huge_class_names_are_refused_at_once(models, image_file):
    classes = ", ".join(f"{k}" + "z" * 10_000 for k in range(1000))
    started = time.perf_counter()
    shown = scoring.explain_image(models, LIMITS, None, image_file, classes, {})
    assert time.perf_counter() - started < 1.0 and "characters long; the limit is" in shown.message
    assert models.get().texts_encoded == 0  # nothing was encoded, nothing cached


def test_the_embedding_cache_stays_under_its_bound(tmp_path):
    store = EmbeddingStore(tmp_path / "e.sqlite3", max_bytes=2 * 2**20)
    rng = np.random.default_rng(0)
    largest = 0
    for batch in range(40):  # 8,000 vectors of 2 KB: eight times the bound
        store.put_many("text", "m", [(f"k{batch}-{i}", rng.normal(size=512).astype(np.float32)) for i in range(200)])
        store.get_many("text", "m", [f"k0-{i}" for i in range(20)])  # a few old entries stay in use
        largest = max(largest, os.path.getsize(tmp_path / "e.sqlite3"))
    batch_bytes = 200 * 4096  # one put of 200 vectors, a page each
    assert largest <= 2 * 2**20 + batch_bytes  # the bound, plus at most the one request that crossed it
    assert store.size() <= 2 * 2**20
    assert len(store.get_many("text", "m", [f"k39-{i}" for i in range(200)])) == 200  # the newest are kept
    assert len(store.get_many("text", "m", [f"k0-{i}" for i in range(20)])) == 20  # and what was used
    assert store.get_many("text", "m", [f"k1-{i}" for i in range(200)]) == {}  # the least recently used went


def test_the_cache_bound_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DESCRY_CACHE_MB", "1.5")
    assert open_store(tmp_path, print).max_bytes == int(1.5 * 2**20)
    monkeypatch.delenv("DESCRY_CACHE_MB")
    assert open_store(tmp_path, print).max_bytes == 1024 * 2**20


# --- 5. a session's whole state is bounded --------------------------------------------------------------------


def test_an_oversized_upload_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({f"class {i}": ["x" * 280] * 200 for i in range(10)}))  # 560 KB
    descriptors, classes, message = editor.upload_descriptors(str(big), {"newt": ["a crest"]}, "newt", LIMITS)
    assert descriptors == {"newt": ["a crest"]} and classes == "newt"
    assert "a session holds at most 256 KB" in message


def test_a_tampered_browser_memory_or_link_over_the_bound_is_refused():
    huge = {f"class {i}": ["x" * 250] * 60 for i in range(20)}  # 300 KB, each class within the request limits
    saved = {"classes": ", ".join(huge), "descriptors": huge, "example": None}
    assert sharing.restore("", saved, {}, LIMITS) == sharing.Restored()  # forgotten: the demo set is shown
    with pytest.raises(DescriptorError, match="a session holds at most 256 KB"):
        LIMITS.check_state(huge)


def test_typing_past_the_bound_keeps_the_set_and_says_why():
    near = {f"class {i}": ["y" * 255] * 50 for i in range(20)}  # 259 KB of 256 KiB: within the bound
    LIMITS.check_state(near)
    with pytest.raises(DescriptorError, match="a session holds at most 256 KB"):
        LIMITS.check_state(editor.edit_features(near, "class 0", "\n".join(["z" * 299] * 64)))


# --- 6. --heatmap-size ----------------------------------------------------------------------------------------


def test_the_heatmap_size_is_bounded(clip, capsys, image_files, frog_file, tmp_path):
    from explain.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["classify", str(image_files[0]), "--descriptors", str(frog_file), "--heatmaps", str(tmp_path / "h"),
              "--heatmap-size", "10000"])  # fmt: skip
    assert stopped.value.code == 2 and "10000 px is outside 32 to 1024 px" in capsys.readouterr().err
    with pytest.raises(HeatmapsUnavailable, match="99999999 px is outside"):
        Explainer(clip).heatmaps(random_image(1), FROGS, ["tree frog"], size=99_999_999)


# --- 7. the work folder, wherever it is ----------------------------------------------------------------------


def test_a_failed_evaluation_leaves_no_work_behind(models, tmp_path, monkeypatch):
    settings = Settings(work_dir=tmp_path / "elsewhere" / "work")
    archive = tmp_path / "data.zip"
    import zipfile

    with zipfile.ZipFile(archive, "w") as packed:
        buffer = io.BytesIO()
        random_image(1).save(buffer, format="PNG")
        packed.writestr("frogs/tree_frog/0.png", buffer.getvalue())
        packed.writestr("frogs/tailed frog/0.png", buffer.getvalue())

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the middle of the run")

    monkeypatch.setattr(evaluate_tab, "run_evaluation", broken)
    done = evaluate_tab.evaluate_upload(models, settings, None, {"path": str(archive)}, None, FROGS, None)
    assert done.report is None and "something went wrong on the server" in done.message
    assert list(settings.work_dir.iterdir()) == []  # the unpacked upload went with the failure


# --- 8. labelling: one run per folder, parts that cannot collide -----------------------------------------------


def test_a_second_run_into_the_same_out_is_refused_naming_the_first(clip_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    random_image(1).save(photos / "a.png")
    with exclusive(tmp_path / "out"):
        with pytest.raises(ExplainError, match=r"is being labelled by process \d+ on .*, started"):
            label(photos, tmp_path / "out", clip_dir)
    summary = label(photos, tmp_path / "out", clip_dir)  # free again
    assert summary["labelled"] == 1


def test_parts_from_two_writers_never_replace_each_other(tmp_path):
    rows = [[{"path": f"{writer}-{k}", "error": None} for k in range(50)] for writer in ("a", "b")]
    threads = [threading.Thread(target=lambda r=r: [write_part(tmp_path, [row]) for row in r]) for r in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list((tmp_path / "parts").glob("part-*.jsonl"))) == 100
    assert sorted(row["path"] for row in read_parts(tmp_path)) == sorted(row["path"] for r in rows for row in r)


def test_two_cli_runs_at_once_label_every_image_once(clip_dir, frog_file, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(24):
        random_image(i).save(photos / f"{i}.png")
    command = [sys.executable, "-m", "explain", "label", str(photos), "--descriptors", str(frog_file), "--model",
               str(clip_dir), "--out", str(tmp_path / "out"), "--workers", "0", "--part-size", "4"]  # fmt: skip
    env = {**os.environ, "DESCRY_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
    assert [code for code, _ in outcomes] == [0, 2]
    assert "is being labelled by process" in outcomes[1][1] and len(outcomes[1][1].strip().splitlines()) == 1
    rows = pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist()
    assert len(rows) == 24 and len({row["path"] for row in rows}) == 24


# --- 9. CSV that spreadsheets cannot run ---------------------------------------------------------------------


def test_csv_cells_cannot_start_a_formula(clip_dir, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    monkeypatch.chdir(photos)  # labelling "." writes the paths as they are found: "=1+2.png"
    names = ["=1+2.png", "@SUM(1+1).png", "+cmd.png", "-dash.png", '=HYPERLINK("http:evil.example","click").png']
    for k, name in enumerate(names):
        random_image(k).save(photos / name)
    descriptors = {"=evil": ["a crest"], "newt": ["a tail"]}
    label(".", tmp_path / "csv", clip_dir, descriptors, fmt="csv")
    label(".", tmp_path / "pq", clip_dir, descriptors)
    import csv

    with open(tmp_path / "csv" / "labels.csv", newline="", encoding="utf-8") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]

    def number(cell: str) -> bool:  # a score such as -13.06 is written as a number, which a spreadsheet never runs
        try:
            float(cell)
            return True
        except ValueError:
            return False

    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) and not number(cell) for cell in cells)
    assert any(number(cell) and cell.startswith("-") for cell in cells)  # negative scores are there, as numbers
    assert any(cell.startswith("'=HYPERLINK") for cell in cells) and any(cell == "'=evil" for cell in cells)
    raw = pq.read_table(tmp_path / "pq" / "labels.parquet").to_pylist()
    assert {Path(row["path"]).name for row in raw} == set(names)  # the other formats keep the raw strings
    from explain.spreadsheet import safe_cell

    assert safe_cell(-0.5) == -0.5 and safe_cell("-0.5") == "'-0.5" and safe_cell("ok") == "ok"


# --- 10. path lists: FIFOs, devices, ../ and two spellings of one file -----------------------------------------


def test_a_path_list_with_a_fifo_and_a_device_finishes_with_error_rows(clip_dir, tmp_path):
    (tmp_path / "list").mkdir()
    random_image(1).save(tmp_path / "real.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    listing = tmp_path / "list" / "images.txt"
    listing.write_text("../real.png\n../pipe.png\n/dev/zero\n../link.png\n../list/../real.png\n")
    result = {}
    worker = threading.Thread(target=lambda: result.update(label(listing, tmp_path / "out", clip_dir)))
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "labelling hung on a FIFO or a device"
    rows = {Path(row["path"]).name: row for row in pq.read_table(tmp_path / "out" / "labels.parquet").to_pylist()}
    assert set(rows) == {"real.png", "pipe.png", "zero"}  # the link and the second spelling: the same file, once
    assert rows["real.png"]["label"] in FROGS
    assert "is a FIFO, not an image file" in rows["pipe.png"]["error"]
    assert "is a device, not an image file" in rows["zero"]["error"]


# --- 11 and 14. folders that are not what they seem ----------------------------------------------------------


def test_model_folders_are_refused_naming_what_they_lack(tmp_path, clip_dir, siglip_dir):
    import shutil

    no_weights = tmp_path / "oc"
    no_weights.mkdir()
    (no_weights / "open_clip_config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="holds open_clip_config.json but no weights"):
        load_model(str(no_weights), "cpu")
    weights_only = tmp_path / "weights"
    weights_only.mkdir()
    shutil.copy(clip_dir / "model.safetensors", weights_only / "model.safetensors")
    with pytest.raises(ModelLoadError, match="holds weights but no config.json .* or open_clip_config.json"):
        load_model(str(weights_only), "cpu")
    with pytest.raises(ModelLoadError, match="'./no/such/folder': there is no such folder"):
        load_model("./no/such/folder", "cpu")
    no_tokenizer = tmp_path / "siglip"
    shutil.copytree(siglip_dir, no_tokenizer)
    for name in ("tokenizer.json", "spiece.model"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match="lacks tokenizer files"):
        load_model(str(no_tokenizer), "cpu")


# --- 12. hub names without a network ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["hf-hub:timm/ViT-B-16-SigLIP", "open_clip:ViT-B-32/openai", "openai/clip-vit-base-patch32"]
)
def test_hub_names_offline_fail_in_one_line_within_seconds(model, frog_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), DESCRY_CACHE_DIR=str(tmp_path / "c"))
    image = tmp_path / "a.png"
    random_image(1).save(image)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "explain", "classify", str(image), "--descriptors", str(frog_file), "--model", model],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and time.monotonic() - started < 40  # imports included; the hub check is 3 s
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "model hub cannot be reached" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]


# --- 13 and 16. --heatmaps a model cannot give; no library progress bars ---------------------------------


def test_heatmaps_a_model_cannot_give_are_refused_before_any_image(capsys, image_files, frog_file, tmp_path):
    from explain.cli import main
    from tests.tiny_models import save_tiny_open_clip

    timm_tower = save_tiny_open_clip(tmp_path / "timm", "timm")
    code = main(["classify", *map(str, image_files), "--descriptors", str(frog_file), "--model", str(timm_tower),
                 "--precision", "int8", "--heatmaps", str(tmp_path / "maps")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not (tmp_path / "maps").exists()
    assert err.strip().count("\n") == 0 and "comes from gradients, which int8's packed weights do not give" in err


def test_a_grid_a_tower_cannot_give_is_refused_for_its_real_reason(tmp_path):
    from explain.errors import HeatmapsUnavailable
    from tests.tiny_models import save_tiny_open_clip

    backend = load_model(str(save_tiny_open_clip(tmp_path / "timm", "timm")), "cpu")
    with pytest.raises(HeatmapsUnavailable) as refused:
        backend.check_heatmaps(448)
    assert "its maps come from gradients at its own input size" in str(refused.value)
    assert "TimmModel" not in str(refused.value)


def test_no_library_progress_bars_on_stderr(clip_dir, frog_file, image_files, tmp_path):
    env = {**os.environ, "DESCRY_CACHE_DIR": str(tmp_path / "c")}
    done = subprocess.run(
        [sys.executable, "-m", "explain", "classify", str(image_files[0]), "--descriptors", str(frog_file),
         "--model", str(clip_dir)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == ""


# --- 17. a quiet server log --------------------------------------------------------------------------------------


def test_a_visitors_mistake_is_one_line_in_the_log_never_a_traceback(models, capfd, image_file):
    for call in (
        lambda: api.api_classify(models, LIMITS, image_file, "newt", "{oops"),
        lambda: api.api_classify(models, LIMITS, image_file, "", ""),
        lambda: api.api_classify(models, LIMITS, image_file, "newt, Newt", ""),
    ):
        with pytest.raises(gr.Error) as raised:
            call()
        assert raised.value.print_exception is False
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and len(out.strip().splitlines()) == 3
    assert all(line.startswith("refused classify: ") for line in out.strip().splitlines())


# --- 18. a strict link decoder --------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "trailing", "symbols"])
def test_damaged_links_are_called_damaged(damage):
    packed = zlib.compress(json.dumps({"v": 1, "c": "newt", "d": {"newt": ["a crest"]}}).encode(), 9)
    if damage == "truncated":
        packed = packed[:-6]
    elif damage == "trailing":
        packed = packed + b"garbage after the end"
    token = base64.urlsafe_b64encode(packed).decode().rstrip("=") if damage != "symbols" else "%%%%!!!!"
    with pytest.raises(DescriptorError, match="the link's state is damaged"):
        sharing.decode_state(token)


# --- 19. answers in every habit, JSON first --------------------------------------------------------------------


def test_one_line_pair_answers_are_understood(tmp_path, monkeypatch):
    from descriptors.cli import main

    monkeypatch.setenv("DESCRY_CACHE_DIR", str(tmp_path / "c"))
    reply = answer("- A: a rounder head / B: a flatter head\n- A: tufted ears / B: no ear tufts")
    with FakeLLM(default=lambda name: reply, structured=False) as server:
        out = tmp_path / "pairs.json"
        code = main(["differential", "--pairs", "lynx|tree frog", "--out", str(out), "--base-url", server.url])
    assert code == 0
    assert json.loads(out.read_text())[0]["pairs"] == [
        ["a rounder head", "a flatter head"],
        ["tufted ears", "no ear tufts"],
    ]
    # The first request asked for JSON; the server refused it, and was asked again in plain text, once.
    assert "response_format" in server.requests[0]["body"] and "response_format" not in server.requests[1]["body"]
    assert len(server.requests) == 2


def test_a_server_that_honours_the_schema_answers_in_json(tmp_path):
    reply = answer(json.dumps({"descriptors": ["Striped fur", "a **long** tail", "striped fur"]}))
    with FakeLLM(default=lambda name: reply) as server:
        llm = llm_for(server)
        result = generate(["tabby cat"], llm)
    assert result.descriptors == {"tabby cat": ["striped fur", "a long tail"]} and llm.structured is True
    schema = server.requests[0]["body"]["response_format"]
    assert schema["type"] == "json_schema" and schema["json_schema"]["schema"]["required"] == ["descriptors"]
    pairs_reply = answer(json.dumps({"pairs": [{"a": "tufted ears", "b": "rounded ears"}]}))
    with FakeLLM(default=lambda name: pairs_reply) as server:
        found, _ = llm_gate.pairs_for("lynx", "tabby cat", lambda: llm_for(server), None, "local")
    assert found == [["tufted ears", "rounded ears"]]


def test_modes_of_files_written_stay_private(tmp_path):
    """The key the browser's copy is sealed with is readable by the app's owner only (0600)."""
    os.environ["DESCRY_CACHE_DIR"] = str(tmp_path)
    sharing.browser_secret(Settings())
    assert stat.S_IMODE(os.stat(tmp_path / "browser-state.key").st_mode) == 0o600
