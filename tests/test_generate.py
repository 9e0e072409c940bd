"""LLM generation against a local OpenAI-compatible server, driven by the real openai client."""

import json

import pytest

from descriptors.cli import main
from descriptors.generate import GenerationCache, LLMError, generate, llm_prompt, make_llm, parse_answer
from tests.fake_llm import FakeLLM, answer, failure, stall

PAPER_QUESTION = (
    "Q: What are useful features for distinguishing a {c} in a photo?\n"
    "A: There are several useful visual features to tell there is a {c} in a photo:\n-"
)


@pytest.fixture
def server():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return monkeypatch


def llm_for(server, sleeps=None, **options):
    options.setdefault("max_retries", 2)
    llm = make_llm("test-model", server.url, None, timeout=options.pop("timeout", 5.0), **options)
    llm.sleep = sleeps.append if sleeps is not None else (lambda seconds: None)
    return llm


# --- the prompt ---------------------------------------------------------------------------------


def test_prompt_is_two_shot_and_ends_with_the_papers_question():
    prompt = llm_prompt("tree frog")
    assert prompt.endswith(PAPER_QUESTION.format(c="tree frog"))
    assert prompt.count("Q: ") == 3 and prompt.count("A: There are several useful visual features") == 3
    assert "hummingbird" in prompt and "fire hydrant" in prompt


# --- parsing answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            " protruding eyes\n- bright green colour\n- sticky toe pads",
            ["protruding eyes", "bright green colour", "sticky toe pads"],
        ),
        (
            "- protruding eyes\n* bright green colour\n• sticky toe pads",
            ["protruding eyes", "bright green colour", "sticky toe pads"],
        ),
        (
            "1. Protruding eyes\n2) Bright green colour.\n10. sticky toe pads",
            ["protruding eyes", "bright green colour", "sticky toe pads"],
        ),
        (
            "Sure! Here are some useful features:\n\n1. **Protruding eyes**\n2. *Bright green colour*\n\n"
            "These help identify it.",
            ["protruding eyes", "bright green colour"],
        ),
        ("Here are the features:\nprotruding eyes\nbright green colour", ["protruding eyes", "bright green colour"]),
        (
            "protruding eyes, bright green colour and sticky toe pads",
            ["protruding eyes", "bright green colour", "sticky toe pads"],
        ),
        ("protruding eyes; a long, slender body", ["protruding eyes", "a long, slender body"]),
        ("- protruding eyes\n- Protruding eyes\n-  \n- protruding  eyes", ["protruding eyes"]),
        ("- tree frog\n- a tree frog\n- Tree_Frog\n- a tree frog's toe pads", ["a tree frog's toe pads"]),
        (
            "- protruding eyes\n\nQ: What are useful features for distinguishing a newt in a photo?\n- a crest",
            ["protruding eyes"],
        ),
        ("```\n- protruding eyes\n```", ["protruding eyes"]),
        ("- M-shaped mark\n- UV-reflective skin", ["M-shaped mark", "UV-reflective skin"]),
        ("", []),
    ],
    ids=[
        "continues-dash",
        "mixed-bullets",
        "numbered",
        "chatty-markdown",
        "preamble-then-lines",
        "comma-prose",
        "semicolons",
        "duplicates",
        "repeats-class-name",
        "stops-at-next-question",
        "code-fence",
        "keeps-acronyms",
        "empty",
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text, "tree frog") == expected


# --- requests, retries, failures ---------------------------------------------------------------------


def test_happy_path_sends_the_papers_prompt(server):
    server.script("tree frog", answer(" protruding eyes\n- bright green colour"))
    result = generate(["tree frog", "tailed frog"], llm_for(server))
    assert result.descriptors == {
        "tree frog": ["protruding eyes", "bright green colour"],
        "tailed frog": ["tailed frog feature one", "feature two", "feature three"],
    }
    assert result.failures == {}
    for request in server.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["body"]["model"] == "test-model"
        assert request["prompt"].endswith(PAPER_QUESTION.format(c=request["class"]))
    assert sorted(r["class"] for r in server.requests) == ["tailed frog", "tree frog"]


@pytest.mark.parametrize(
    "reply",
    [
        "protruding eyes\nbright green colour\nsticky toe pads",
        "1. Protruding eyes\n2. Bright green colour\n3. Sticky toe pads",
        "Sure! Here are some useful visual features:\n\n- **Protruding eyes**\n- Bright green colour\n"
        "- Sticky toe pads\n\nHope this helps!",
    ],
    ids=["no-bullets", "numbered", "chatty"],
)
def test_answer_styles_through_the_server(server, reply):
    server.script("tree frog", answer(reply))
    result = generate(["tree frog"], llm_for(server))
    assert result.descriptors == {"tree frog": ["protruding eyes", "bright green colour", "sticky toe pads"]}


def test_429_then_success_honours_retry_after(server):
    server.script("newt", failure(429, "slow down", retry_after="3"), answer("- a crest"))
    sleeps = []
    assert generate(["newt"], llm_for(server, sleeps)).descriptors == {"newt": ["a crest"]}
    assert sleeps == [3.0]
    assert server.calls_for("newt") == 2


def test_retry_after_as_an_http_date_is_capped_by_the_timeout(server):
    import email.utils
    import time

    later = email.utils.formatdate(time.time() + 300, usegmt=True)
    server.script("newt", failure(429, "slow down", retry_after=later), answer("- a crest"))
    sleeps = []
    assert generate(["newt"], llm_for(server, sleeps, timeout=4.0)).descriptors == {"newt": ["a crest"]}
    assert sleeps == [4.0]  # not the 300 s the date asks for, nor the 120 s cap


def test_a_runaway_answer_is_bounded():
    from descriptors.generate import MAX_DESCRIPTOR_CHARS, MAX_DESCRIPTORS

    rambling = (
        "- a crest\n- " + "very " * 100 + "long\n" + "".join(f"- feature {i}\n" for i in range(500)) + "x" * 5_000_000
    )
    parsed = parse_answer(rambling, "newt")
    assert parsed[:2] == ["a crest", "feature 0"]  # the 500-character item is not a feature
    assert len(parsed) == MAX_DESCRIPTORS and all(len(item) <= MAX_DESCRIPTOR_CHARS for item in parsed)
    assert parse_answer("- " + "x" * 5_000_000, "newt") == []  # one 5 MB "descriptor" is dropped, not saved


def test_429_without_retry_after_backs_off_exponentially(server):
    server.script("newt", failure(429), failure(429), answer("- a crest"))
    sleeps = []
    generate(["newt"], llm_for(server, sleeps, backoff=0.5))
    assert sleeps == [0.5, 1.0]


def test_persistent_500_fails_by_name_after_retries(server):
    server.script("newt", *[failure(500, "boom")] * 3)
    sleeps = []
    result = generate(["newt"], llm_for(server, sleeps, backoff=0.25))
    assert result.descriptors == {}
    assert result.failures == {"newt": "HTTP 500 after 3 attempts"}
    assert sleeps == [0.25, 0.5]
    assert server.calls_for("newt") == 3


def test_timeout_is_retried_then_reported(server):
    server.script("newt", stall(2.0), stall(2.0))
    result = generate(["newt"], llm_for(server, timeout=0.3, max_retries=1))
    assert result.failures == {"newt": "timed out after 2 attempts"}


def test_timeout_then_success(server):
    server.script("newt", stall(2.0), answer("- a crest"))
    assert generate(["newt"], llm_for(server, timeout=0.3)).descriptors == {"newt": ["a crest"]}


def test_client_errors_are_not_retried(server):
    server.script("newt", failure(400, "model 'nope' not found"))
    result = generate(["newt"], llm_for(server))
    assert result.failures == {"newt": "HTTP 400 from the LLM: model 'nope' not found"}
    assert server.calls_for("newt") == 1


def test_answer_without_descriptors_is_a_failure(server):
    server.script("newt", answer("newt"))
    assert generate(["newt"], llm_for(server)).failures == {"newt": "the answer held no usable descriptors"}


def test_unreachable_server(tmp_path):
    llm = make_llm("m", "http://127.0.0.1:9/v1", None, timeout=1.0, max_retries=0)
    with pytest.raises(LLMError, match="cannot connect"):
        llm.ask("newt")


def test_cache_is_keyed_by_model_prompt_version_and_class(server, tmp_path):
    cache = GenerationCache(tmp_path / "g.sqlite3")
    generate(["newt", "toad"], llm_for(server), cache)
    assert len(server.requests) == 2
    again = generate(["newt", "toad"], llm_for(server), cache)
    assert len(server.requests) == 2 and again.cached == {"newt", "toad"}
    other = llm_for(server)
    other.model = "another-model"
    generate(["newt"], other, cache)
    assert len(server.requests) == 3
    assert cache.get("test-model", "newt") == ["newt feature one", "feature two", "feature three"]


def test_a_new_prompt_version_misses_the_cache(tmp_path, monkeypatch):
    import descriptors.generate as generation

    cache = GenerationCache(tmp_path / "g.sqlite3")
    cache.put("m", "newt", ["a crest"])
    assert cache.get("m", "newt") == ["a crest"]
    monkeypatch.setattr(generation, "PROMPT_VERSION", "changed-prompt")
    assert cache.get("m", "newt") is None


# --- the command line -----------------------------------------------------------------------------------


def run(capsys, *args):
    code = main(["generate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_one_failure_among_five_keeps_the_other_four(capsys, env, server, tmp_path):
    server.script("salamander", *[failure(503, "overloaded")] * 3)
    out_file = tmp_path / "d.json"
    code, _, err = run(
        capsys,
        "--classes",
        "newt,toad,salamander,axolotl,caecilian",
        "--out",
        out_file,
        "--base-url",
        server.url,
        "--retries",
        "2",
        "--concurrency",
        "3",
    )
    assert code == 1
    assert list(json.loads(out_file.read_text())) == ["newt", "toad", "axolotl", "caecilian"]
    assert "error: could not generate 'salamander': HTTP 503 after 3 attempts" in err
    assert "wrote 4 classes" in err and "[5/5]" in err


def test_cli_merges_without_clobbering_edits(capsys, env, server, tmp_path):
    out_file = tmp_path / "d.json"
    out_file.write_text(json.dumps({"Newt": ["my own careful edit"], "toad": []}))
    code, _, err = run(capsys, "--classes", "newt,toad,axolotl", "--out", out_file, "--base-url", server.url)
    assert code == 0
    data = json.loads(out_file.read_text())
    assert data["Newt"] == ["my own careful edit"]
    assert data["toad"] == ["toad feature one", "feature two", "feature three"]  # empty lists are filled
    assert list(data) == ["Newt", "toad", "axolotl"]
    assert sorted(r["class"] for r in server.requests) == ["axolotl", "toad"]
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["d.json"]  # no temporary files left behind

    code, _, err = run(capsys, "--classes", "newt,toad,axolotl", "--out", out_file, "--base-url", server.url)
    assert code == 0 and "already in" in err

    server.script("newt", answer("- a bright orange belly"))
    code, _, _ = run(capsys, "--classes", "newt", "--out", out_file, "--base-url", server.url, "--force", "--no-cache")
    assert json.loads(out_file.read_text())["Newt"] == ["a bright orange belly"]


def test_cli_reads_a_class_file(capsys, env, server, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("# amphibians\nnewt\n\n  toad  \nNewt\n")
    out_file = tmp_path / "d.json"
    assert run(capsys, "--classes-file", classes, "--out", out_file, "--base-url", server.url)[0] == 0
    assert list(json.loads(out_file.read_text())) == ["newt", "toad"]


def test_cli_rerun_costs_nothing(capsys, env, server, tmp_path):
    run(capsys, "--classes", "newt,toad", "--out", tmp_path / "a.json", "--base-url", server.url)
    code, _, err = run(capsys, "--classes", "newt,toad", "--out", tmp_path / "b.json", "--base-url", server.url)
    assert code == 0 and len(server.requests) == 2 and "(cached)" in err
    assert json.loads((tmp_path / "b.json").read_text()) == json.loads((tmp_path / "a.json").read_text())


def test_cli_never_prints_the_api_key(capsys, env, server, tmp_path):
    secret = "sk-test-0123456789SECRET"
    env.setenv("OPENAI_API_KEY", secret)
    server.script("newt", failure(401, f"Incorrect API key provided: {secret}"))
    code, out, err = run(capsys, "--classes", "newt", "--out", tmp_path / "d.json", "--base-url", server.url)
    assert code == 1
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    assert secret not in out + err and "Incorrect API key provided: ***" in err


def test_cli_without_any_llm_says_how_to_configure_one(capsys, env, tmp_path):
    code, out, err = run(capsys, "--classes", "newt", "--out", tmp_path / "d.json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "OPENAI_API_KEY" in err and "--base-url" in err and "11434" in err


def test_cli_base_url_from_the_environment(capsys, env, server, tmp_path):
    env.setenv("OPENAI_BASE_URL", server.url)
    from descriptors.cli import build_parser

    args = build_parser().parse_args(["generate", "--classes", "newt", "--out", str(tmp_path / "d.json")])
    assert args.base_url == server.url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", " , "], "class list is empty"),
        (["--classes-file", "absent.txt"], "no such class file"),
    ],
)
def test_cli_bad_class_lists(capsys, env, server, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args, "--out", tmp_path / "d.json", "--base-url", server.url)
    assert code == 2 and message in err and server.requests == []


def test_cli_refuses_to_merge_into_a_malformed_file(capsys, env, server, tmp_path):
    out_file = tmp_path / "d.json"
    out_file.write_text("{not json")
    code, _, err = run(capsys, "--classes", "newt", "--out", out_file, "--base-url", server.url)
    assert code == 2 and "not valid JSON" in err
    assert out_file.read_text() == "{not json" and server.requests == []


# --- signals: nothing received is lost, nothing new is sent, the process ends promptly -----------------------


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signals_save_every_answer_received_and_stop_at_once(signal_name, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    classes = [f"class{i:02d}" for i in range(40)]
    with FakeLLM() as fake:
        for name in classes[12:]:
            fake.script(name, stall(60))  # these hang far longer than the test waits
        out_file = tmp_path / "d.json"
        environment = {
            **os.environ,
            "OPENAI_BASE_URL": fake.url,
            "DESCRY_CACHE_DIR": str(tmp_path / "cache"),
            "PYTHONUNBUFFERED": "1",
        }
        environment.pop("OPENAI_API_KEY", None)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "descriptors",
                "generate",
                "--classes",
                ",".join(classes),
                "--out",
                str(out_file),
                "--concurrency",
                "4",
                "--timeout",
                "120",
            ],
            cwd=Path(__file__).resolve().parents[1],
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines = []
        while len([line for line in lines if line.startswith("[")]) < 12:
            line = process.stderr.readline()
            assert line, f"the generator ended early: {lines}"
            lines.append(line)
        time.sleep(0.3)  # the four hanging requests are in flight now
        sent_before = len(fake.requests)
        started = time.monotonic()
        process.send_signal(getattr(signal, signal_name))
        _, rest = process.communicate(timeout=20)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"took {elapsed:.1f} s to stop"
        assert process.returncode == 128 + getattr(signal, signal_name)
        assert len(fake.requests) == sent_before <= 16  # no request after the signal
    assert list(json.loads(out_file.read_text())) == classes[:12]
    assert "wrote 12 classes" in rest and f"stopped by {signal_name}: 28 classes not generated" in rest
    assert "Traceback" not in rest
