"""Who may spend the owner's LLM key, and the app's two uses of it: descriptors and what tells two classes apart.

A shared app's LLM key belongs to its owner, so every request that would
reach the LLM (the page's buttons and the API alike) passes `LLMGate`
first: the owner can turn visitors off or require a token, and a visitor
may ask only so often, for only so many classes. `generate_for` and
`pairs_for` are the one path from the page and the API to the LLM; they
raise `Refusal` with the reason when the request may not go.
"""

from __future__ import annotations

import functools
import hmac
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from descriptors.differential import differentiate, pair_key
from descriptors.generate import LLM, Generation, GenerationCache, configured_llm, generate
from descriptors.store import default_cache_dir
from web.messages import Refusal
from web.settings import Settings

NO_LLM = (
    "No LLM is configured. Set `OPENAI_API_KEY` for the OpenAI API, or `OPENAI_BASE_URL` for an "
    "OpenAI-compatible server such as Ollama (`http://localhost:11434/v1`), then restart the app. "
    "On a Hugging Face Space, add them as secrets in the Space's settings."
)
LLMFactory = Callable[[], LLM | None]


class NoLLM(Refusal):
    """No LLM is configured; the message says how to configure one."""


class NoAnswer(Refusal):
    """The LLM was asked but its answer held nothing usable; the message says why."""


class LLMGate:
    """Who may spend the owner's LLM key, and how fast.

    With `public` False, generation is off for visitors; with a `token`, it
    needs that token (an API argument), which also turns the page's button
    off. Otherwise each visitor may ask `per_visitor` times a minute,
    everyone together `per_minute` times, for at most `max_classes` classes
    a request.
    """

    def __init__(
        self,
        public: bool = True,
        token: str | None = None,
        per_visitor: int = 5,
        per_minute: int = 30,
        max_classes: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.public, self.token = public, token
        self.per_visitor, self.per_minute, self.max_classes = per_visitor, per_minute, max_classes
        self.clock = clock
        self._calls: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **limits) -> LLMGate:
        return cls(settings.llm_public, settings.llm_token, **limits)

    def refusal(self, visitor: str, classes: int, token: str | None = None) -> str | None:
        """Why this request may not go to the LLM, or None (and then it is counted)."""
        if self.token is not None:
            if not token or not hmac.compare_digest(token, self.token):
                return (
                    "LLM generation on this app needs the owner's token "
                    "(the `token` argument of /generate_descriptors)."
                )
        elif not self.public:
            return "LLM generation is turned off on this app by its owner."
        if classes > self.max_classes:
            return f"Ask for at most {self.max_classes} classes at a time ({classes} were asked for)."
        with self._lock:
            now = self.clock()
            self._calls = [(when, who) for when, who in self._calls if now - when < 60]
            if sum(1 for _, who in self._calls if who == visitor) >= self.per_visitor:
                return f"This session has asked the LLM {self.per_visitor} times in the last minute; wait a minute."
            if len(self._calls) >= self.per_minute:
                return "The LLM is busy with other visitors' requests; try again in a minute."
            self._calls.append((now, visitor))
        return None


def visitor_key(request: gr.Request | None) -> str:
    """A key for the visitor: Gradio's session, else the client's address."""
    if request is None:
        return "local"
    return (
        getattr(request, "session_hash", None) or getattr(getattr(request, "client", None), "host", None) or "unknown"
    )


def app_llm(settings: Settings) -> LLMFactory:
    """The LLM the environment configures, asked with the app's timeout and one retry; None when there is none."""
    return lambda: configured_llm(timeout=settings.llm_timeout, max_retries=1)


def generation_cache() -> GenerationCache:
    """One LLM-answer cache per cache folder for the whole app, so that a broken file is reported once in the log."""
    return _generation_cache(default_cache_dir() / "generations.sqlite3")


@functools.cache
def _generation_cache(path: Path) -> GenerationCache:
    return GenerationCache(path, lambda message: print(f"warning: {message}", flush=True))


def _ready(llm_factory: LLMFactory, gate: LLMGate | None, visitor: str, classes: int, token: str) -> LLM:
    llm = llm_factory()
    if llm is None:
        raise NoLLM(NO_LLM)
    refusal = gate.refusal(visitor, classes, token) if gate else None
    if refusal:
        raise Refusal(refusal)
    return llm


def generate_for(
    names: list[str], llm_factory: LLMFactory, gate: LLMGate | None, visitor: str, token: str = ""
) -> tuple[Generation, str]:
    """Descriptors for `names` from the LLM, through the gate; returns (what came back, the LLM's name)."""
    llm = _ready(llm_factory, gate, visitor, len(names), token)
    return generate(names, llm, generation_cache(), concurrency=4), llm.model


def pairs_for(
    a: str, b: str, llm_factory: LLMFactory, gate: LLMGate | None, visitor: str, token: str = ""
) -> tuple[list[list[str]], bool]:
    """Feature pairs that tell `a` from `b`, through the gate: (pairs, whether they came from the cache)."""
    llm = _ready(llm_factory, gate, visitor, 1, token)
    result = differentiate([(a, b)], llm, generation_cache(), concurrency=1)
    found = result.descriptors.get(pair_key(a, b))
    if not found:
        reason = next(iter(result.failures.values()), "no answer")
        raise NoAnswer(f"Could not find what tells {a} from {b}: {reason}.")
    return found, bool(result.cached)
