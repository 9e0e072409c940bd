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
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr

from descriptors.differential import differentiate, pair_key
from descriptors.generate import LLM, Generation, GenerationCache, configured_llm, generate
from descriptors.limits import RequestLimits
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
    a request. A visitor is known by several keys (its session and its
    address, see `visitor_keys`) and each is counted on its own, so a script
    that opens a new session for every request is still one address.
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
        self._calls: list[tuple[float, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **limits) -> LLMGate:
        return cls(settings.llm_public, settings.llm_token, **limits)

    def refusal(self, visitor: str | Sequence[str], classes: int, token: str | None = None) -> str | None:
        """Why this request may not go to the LLM, or None (and then it is counted against every key of the
        visitor)."""
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
        keys = (visitor,) if isinstance(visitor, str) else tuple(visitor)
        with self._lock:
            now = self.clock()
            self._calls = [(when, who) for when, who in self._calls if now - when < 60]
            for key in keys:
                if sum(1 for _, who in self._calls if key in who) >= self.per_visitor:
                    kind = key.partition(":")[0] if ":" in key else "session"
                    return f"This {kind} has asked the LLM {self.per_visitor} times in the last minute; wait a minute."
            if len(self._calls) >= self.per_minute:
                return "The LLM is busy with other visitors' requests; try again in a minute."
            self._calls.append((now, keys))
        return None


def visitor_keys(request: gr.Request | None, proxy_hops: int = 0) -> tuple[str, ...]:
    """The keys a visitor is counted by: Gradio's session, and the address the request came from.

    A client can open as many sessions as it likes, but not choose its address. Behind `proxy_hops`
    trusted proxies (a Hugging Face Space has one), the address is the one the nearest of them saw, read
    from X-Forwarded-For; anything a client wrote into that header itself comes before it and is ignored.
    """
    if request is None:
        return ("session:local",)
    keys = []
    session = getattr(request, "session_hash", None)
    if session:
        keys.append(f"session:{session}")
    address = getattr(getattr(request, "client", None), "host", None)
    if proxy_hops > 0:
        headers = getattr(request, "headers", None) or {}
        forwarded = [part.strip() for part in (headers.get("x-forwarded-for") or "").split(",") if part.strip()]
        if len(forwarded) >= proxy_hops:
            address = forwarded[-proxy_hops]
    if address:
        keys.append(f"address:{address}")
    return tuple(keys) or ("session:unknown",)


MAX_PROMPT_CHARS = 4000  # the longest prompt the app sends with the owner's key: our own text and two class names


def app_llm(settings: Settings) -> LLMFactory:
    """The LLM the environment configures, asked with the app's timeout and one retry, and never with a prompt
    longer than `MAX_PROMPT_CHARS`; None when there is none."""

    def make():
        llm = configured_llm(timeout=settings.llm_timeout, max_retries=1)
        if llm is not None:
            llm.max_prompt_chars = MAX_PROMPT_CHARS
        return llm

    return make


def generation_cache() -> GenerationCache:
    """One LLM-answer cache per cache folder for the whole app, so that a broken file is reported once in the log."""
    return _generation_cache(default_cache_dir() / "generations.sqlite3")


@functools.cache
def _generation_cache(path: Path) -> GenerationCache:
    return GenerationCache(path, lambda message: print(f"warning: {message}", flush=True))


def _ready(
    llm_factory: LLMFactory, gate: LLMGate | None, visitor, names: list[str], limits: RequestLimits, token: str
) -> LLM:
    limits.check_names(names)  # a class name past the limits never reaches the LLM
    llm = llm_factory()
    if llm is None:
        raise NoLLM(NO_LLM)
    refusal = gate.refusal(visitor, len(names), token) if gate else None
    if refusal:
        raise Refusal(refusal)
    return llm


def generate_for(
    names: list[str],
    llm_factory: LLMFactory,
    gate: LLMGate | None,
    visitor,
    token: str = "",
    limits: RequestLimits = RequestLimits(),
) -> tuple[Generation, str]:
    """Descriptors for `names` from the LLM, through the gate; returns (what came back, the LLM's name)."""
    llm = _ready(llm_factory, gate, visitor, names, limits, token)
    return generate(names, llm, generation_cache(), concurrency=4), llm.model


def pairs_for(
    a: str,
    b: str,
    llm_factory: LLMFactory,
    gate: LLMGate | None,
    visitor,
    token: str = "",
    limits: RequestLimits = RequestLimits(),
) -> tuple[list[list[str]], bool]:
    """Feature pairs that tell `a` from `b`, through the gate: (pairs, whether they came from the cache)."""
    llm = _ready(llm_factory, gate, visitor, [a, b], limits, token)
    result = differentiate([(a, b)], llm, generation_cache(), concurrency=1)
    found = result.descriptors.get(pair_key(a, b))
    if not found:
        reason = next(iter(result.failures.values()), "no answer")
        raise NoAnswer(f"Could not find what tells {a} from {b}: {reason}.")
    return found, bool(result.cached)
