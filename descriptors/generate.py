"""Asking an LLM for each class's visual features, over any OpenAI-compatible endpoint.

This module holds the paper's two-shot prompt (with our own worked
examples), the parser that turns an answer into a clean descriptor list, a
retrying request to a chat-completions endpoint, the endpoint the
environment configures (`configured_llm`: $OPENAI_API_KEY,
$OPENAI_BASE_URL, $DESCRY_LLM_MODEL), and a cache of answers by (LLM model,
prompt version, class name). It does not read or write descriptor files
(see `store`) and has no command line (see `cli`).
"""

from __future__ import annotations

import email.utils
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from descriptors.names import normalise_name
from descriptors.sqlite_cache import CacheDB

# Bump when the prompt or the parser changes, so cached answers from the old one are not reused.
PROMPT_VERSION = "2shot-v1"
DEFAULT_LLM = "gpt-4o-mini"
MAX_WAIT_SECONDS = 120.0
MAX_DESCRIPTORS = 40  # per class; an answer that goes on is cut here
MAX_DESCRIPTOR_CHARS = 200  # a longer item is a paragraph, not a visual feature, and is dropped
MAX_ANSWER_CHARS = 64_000  # only the start of a runaway answer is read

_EXAMPLES = """\
Q: What are useful visual features for distinguishing a hummingbird in a photo?
A: There are several useful visual features to tell there is a hummingbird in a photo:
- a very small bird
- a long, thin, needle-like bill
- iridescent green or red feathers
- wings beating so fast they look blurred
- hovering in front of a flower
- a short, forked or rounded tail

Q: What are useful visual features for distinguishing a fire hydrant in a photo?
A: There are several useful visual features to tell there is a fire hydrant in a photo:
- a short metal post standing on a pavement
- painted red, yellow or silver
- a rounded, dome-shaped cap
- bolted outlet nozzles on the sides
- a pentagonal nut on top
- often near a kerb or street corner
"""


def llm_prompt(class_name: str) -> str:
    """The paper's two-shot prompt, ending where the model should continue the bullet list."""
    return (
        f"{_EXAMPLES}\n"
        f"Q: What are useful features for distinguishing a {class_name} in a photo?\n"
        f"A: There are several useful visual features to tell there is a {class_name} in a photo:\n"
        "-"
    )


_BULLET = re.compile(r"^\s*(?:[-*•‣–]|\d{1,2}[.)])\s+(.*)$")
_EMPHASIS = re.compile(r"[*`]+|(?<!\w)_+|_+(?!\w)")  # markdown emphasis; underscores inside words stay


def parse_answer(text: str, class_name: str) -> list[str]:
    """Turn an LLM's answer into a clean list of descriptors.

    Accepts "-", "*" and "1." bullets, a first item without a bullet (the
    prompt ends with "-"), chatty preambles ending in ":", and plain lists
    with one item per line or separated by semicolons or commas. Drops
    duplicates, empty items and items that merely repeat the class name, and
    stops where the model starts a new "Q:". A JSON answer (what a server
    that honours `DESCRIPTOR_SCHEMA` returns) is read as such.
    """
    structured = json_field(text, "descriptors")
    if isinstance(structured, list):
        return _clean((item for item in structured if isinstance(item, str)), class_name)
    lines = []
    for line in text[:MAX_ANSWER_CHARS].replace("\r\n", "\n").split("\n"):
        if re.match(r"^\s*Q:", line):
            break
        if line.strip() and not line.strip().startswith("```"):
            lines.append(line)
    bulleted = [m.group(1) for m in map(_BULLET.match, lines) if m]
    if bulleted:
        items = bulleted
        first = lines[0]
        if not _BULLET.match(first) and not _is_preamble(first):
            items = [first, *items]  # the answer continued the prompt's trailing "-"
    else:
        prose = [line for line in lines if not _is_preamble(line)]
        if len(prose) == 1:
            separator = ";" if ";" in prose[0] else ","
            items = prose[0].split(separator)
            if len(items) > 1:  # "a, b and c": the last comma item may hold two
                items[-1:] = re.split(r"\s+and\s+", items[-1], maxsplit=1)
        else:
            items = prose
    return _clean(items, class_name)


DESCRIPTOR_SCHEMA = {
    "name": "visual_features",
    "schema": {
        "type": "object",
        "properties": {"descriptors": {"type": "array", "items": {"type": "string"}}},
        "required": ["descriptors"],
        "additionalProperties": False,
    },
}


def json_field(text: str, key: str) -> object:
    """The field `key` of an answer that is one JSON object (fenced in ``` or not), else None."""
    body = text[:MAX_ANSWER_CHARS].strip()
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", body)
    if not body.startswith("{"):
        return None
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return None
    return decoded.get(key) if isinstance(decoded, dict) else None


def _is_preamble(line: str) -> bool:
    stripped = line.strip()
    return stripped.endswith(":") or bool(re.match(r"^(sure|certainly|of course|here (are|is))\b", stripped, re.I))


def _clean(items: Iterable[str], class_name: str) -> list[str]:
    kept, seen = [], set()
    own_names = {normalise_name(f"{article}{class_name}") for article in ("", "a ", "an ", "the ")}
    for item in items:
        item = _EMPHASIS.sub("", item)
        item = re.sub(r"^\s*(?:and|or)\s+", "", item)
        item = " ".join(item.split()).strip(" .;,")
        if item[:1].isupper() and item[1:2].islower():
            item = item[0].lower() + item[1:]  # "Protruding eyes" -> "protruding eyes"; "M-shaped" stays
        key = normalise_name(item)
        if not key or key in seen or key in own_names or len(item) > MAX_DESCRIPTOR_CHARS:
            continue
        seen.add(key)
        kept.append(item)
        if len(kept) == MAX_DESCRIPTORS:
            break
    return kept


class LLMError(RuntimeError):
    """A request that failed for good; the message is one line and never contains the API key."""


@dataclass
class LLM:
    """An OpenAI-compatible chat endpoint and how patiently to ask it."""

    client: object  # openai.OpenAI, or anything with .chat.completions.create
    model: str = DEFAULT_LLM
    max_retries: int = 4
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    sleep: Callable[[float], None] = time.sleep
    secret: str = field(default="", repr=False)  # redacted from every message
    stop: threading.Event = field(default_factory=threading.Event, repr=False)  # set: send nothing more
    max_wait: float = MAX_WAIT_SECONDS  # the longest pause before a retry, Retry-After included
    max_prompt_chars: int | None = None  # refuse to send a longer prompt (a shared app bounds what its key pays)
    structured: bool | None = None  # whether the server honours a JSON schema; None: not known yet

    def ask(self, class_name: str) -> str:
        """The raw answer text for one class's descriptors (the paper's prompt)."""
        return self.complete(llm_prompt(class_name), DESCRIPTOR_SCHEMA)

    def complete(self, prompt: str, schema: dict | None = None) -> str:
        """The answer to one prompt, with the key redacted from it, retrying 429s, 5xx and timeouts with backoff.

        With a `schema`, the server is asked for JSON in that shape (`response_format`); a server that
        refuses the request for it is asked again without, and is not asked for a schema again.
        """
        if self.max_prompt_chars is not None and len(prompt) > self.max_prompt_chars:
            raise LLMError(
                f"the prompt is {len(prompt):,} characters; this app sends at most {self.max_prompt_chars:,}"
            )
        try:
            return self.redact(self._complete(prompt, schema if self.structured is not False else None))
        except _SchemaRefused:
            self.structured = False
            return self.redact(self._complete(prompt, None))

    def _complete(self, prompt: str, schema: dict | None) -> str:
        import openai

        attempt = 0
        options = {"response_format": {"type": "json_schema", "json_schema": schema}} if schema else {}
        while True:
            if self.stop.is_set():
                raise LLMError("stopped before the request was sent")
            try:
                response = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0, **options
                )
                if schema:
                    self.structured = True
                return response.choices[0].message.content or ""
            except openai.APIStatusError as error:
                status = error.status_code
                if (
                    schema
                    and status in (400, 422)
                    and re.search(r"response_format|json_schema|schema", _message(error), re.I)
                ):
                    raise _SchemaRefused from None  # the server does not do structured answers
                if status != 429 and status < 500:
                    raise LLMError(self.redact(f"HTTP {status} from the LLM: {_message(error)}")) from None
                reason, wait = f"HTTP {status}", _retry_after(error.response)
            except openai.APITimeoutError:
                reason, wait = "timed out", None
            except openai.APIConnectionError as error:
                reason, wait = f"cannot connect ({_message(error)})", None
            if attempt == self.max_retries:
                raise LLMError(self.redact(f"{reason} after {attempt + 1} attempt{'s' if attempt else ''}"))
            pause = min(wait if wait is not None else self.backoff * 2**attempt, self.max_wait)
            if self.sleep is time.sleep:
                self.stop.wait(pause)  # a stop request ends the pause at once
            else:
                self.sleep(pause)
            attempt += 1

    def redact(self, text: str) -> str:
        """`text` with the API key replaced by ***, in messages and in answers alike (a hostile endpoint could
        echo the key back, and answers are cached, shown and written)."""
        return text.replace(self.secret, "***") if self.secret else text


class _SchemaRefused(Exception):
    """The server refused a request that asked for JSON in a schema."""


def make_llm(model: str, base_url: str | None, api_key: str | None, timeout: float = 60.0, **options) -> LLM:
    """An `LLM` over the official openai client; local servers get a placeholder key."""
    import openai

    client = openai.OpenAI(api_key=api_key or "not-needed", base_url=base_url or None, timeout=timeout, max_retries=0)
    options.setdefault("max_wait", min(MAX_WAIT_SECONDS, timeout))  # a Retry-After never outlasts --timeout
    return LLM(client, model, secret=api_key or "", **options)


def llm_model_name() -> str:
    """The LLM to ask: $DESCRY_LLM_MODEL, else the default."""
    return os.environ.get("DESCRY_LLM_MODEL") or DEFAULT_LLM


def configured_llm(
    model: str | None = None, base_url: str | None = None, timeout: float = 60.0, max_retries: int = 4
) -> LLM | None:
    """The LLM the environment configures, or None when neither a key nor an endpoint is set.

    The key comes only from $OPENAI_API_KEY; the endpoint from `base_url`,
    else $OPENAI_BASE_URL (unset: the OpenAI API); the model from `model`,
    else `llm_model_name()`.
    """
    api_key = os.environ.get("OPENAI_API_KEY") or None
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    if not api_key and not base_url:
        return None
    return make_llm(model or llm_model_name(), base_url, api_key, timeout=timeout, max_retries=max_retries)


class GenerationCache:
    """Parsed answers in SQLite, keyed by (LLM model, prompt version, class name).

    A damaged or read-only file warns once (through `warn`) and then acts as an empty cache.
    """

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None):
        self._db = CacheDB(
            path,
            "CREATE TABLE IF NOT EXISTS generations (model TEXT, prompt_version TEXT, class_name TEXT,"
            " descriptors TEXT, PRIMARY KEY (model, prompt_version, class_name))",
            warn,
        )

    def get(self, model: str, class_name: str, version: str | None = None) -> list | None:
        def read(db) -> list[str] | None:
            row = db.execute(
                "SELECT descriptors FROM generations WHERE model = ? AND prompt_version = ? AND class_name = ?",
                (model, version or PROMPT_VERSION, class_name),
            ).fetchone()
            value = json.loads(row[0]) if row else None
            return value if isinstance(value, list) and all(isinstance(v, (str, list)) for v in value) else None

        return self._db.run(read, None)

    def put(self, model: str, class_name: str, descriptors: list, version: str | None = None) -> None:
        def write(db) -> None:
            with db:
                db.execute(
                    "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?)",
                    (model, version or PROMPT_VERSION, class_name, json.dumps(descriptors, ensure_ascii=False)),
                )

        self._db.run(write, None)


@dataclass
class Generation:
    """What a run produced: descriptors by class, failures by class, which answers came from the cache,
    and the classes not asked for because the run was stopped."""

    descriptors: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)
    unfinished: list[str] = field(default_factory=list)


def generate(
    classes: list[str],
    llm: LLM,
    cache: GenerationCache | None = None,
    concurrency: int = 4,
    on_done: Callable[[str, Generation], None] | None = None,
) -> Generation:
    """Descriptors for each class, asking up to `concurrency` at once; one failure never stops the rest.

    Setting `llm.stop` (a signal handler does) ends the run within a fraction
    of a second: no new request is sent, every answer already received is
    kept, and requests still in flight are abandoned (their threads are
    daemons, so a hung request cannot hold the process). The classes never
    answered are listed in `unfinished`.
    """

    def one(class_name: str) -> list[str]:
        descriptors = parse_answer(llm.ask(class_name), class_name)
        if not descriptors:
            raise LLMError("the answer held no usable descriptors")
        return descriptors

    return ask_all(classes, one, llm, cache, None, concurrency, on_done)


def ask_all(
    keys: list[str],
    one: Callable[[str], list],
    llm: LLM,
    cache: GenerationCache | None,
    version: str | None,
    concurrency: int = 4,
    on_done: Callable[[str, Generation], None] | None = None,
) -> Generation:
    """Run `one(key)` for every key not in the cache, up to `concurrency` at once, stopping at `llm.stop`."""
    result = Generation()
    todo = []
    for key in keys:
        hit = cache.get(llm.model, key, version) if cache else None
        if hit:
            result.descriptors[key] = hit
            result.cached.add(key)
            if on_done:
                on_done(key, result)
        else:
            todo.append(key)
    answers = _ask_in_threads(todo, one, llm, concurrency)
    pending = set(todo)

    def record(key: str, value: list | None, failure: str | None) -> None:
        if failure is not None and llm.stop.is_set() and failure.startswith("stopped"):
            return  # never asked: it stays unfinished
        pending.discard(key)
        if failure is None:
            result.descriptors[key] = value
            if cache:
                cache.put(llm.model, key, value, version)
        else:
            result.failures[key] = failure
        if on_done:
            on_done(key, result)

    while pending:
        try:
            record(*answers.get(timeout=0.05))
        except queue.Empty:
            if llm.stop.is_set():
                break
    while True:  # answers that arrived as the stop came are kept too
        try:
            record(*answers.get_nowait())
        except queue.Empty:
            break
    result.unfinished = [k for k in todo if k in pending]
    # Keep the caller's order.
    result.descriptors = {k: result.descriptors[k] for k in keys if k in result.descriptors}
    return result


def _ask_in_threads(
    keys: list[str], one: Callable[[str], list], llm: LLM, concurrency: int
) -> queue.Queue[tuple[str, list | None, str | None]]:
    """Start up to `concurrency` daemon threads that run `one` on each key until `llm.stop`; each answer (key,
    value, None) or failure (key, None, reason) arrives on the returned queue."""
    jobs: queue.Queue[str] = queue.Queue()
    for key in keys:
        jobs.put(key)
    answers: queue.Queue[tuple[str, list | None, str | None]] = queue.Queue()

    def work() -> None:
        while not llm.stop.is_set():
            try:
                key = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                answers.put((key, one(key), None))
            except LLMError as error:
                answers.put((key, None, str(error)))
            except Exception as error:  # a bug or an odd reply must not lose the other keys
                answers.put((key, None, llm.redact(f"{error.__class__.__name__}: {error}".splitlines()[0])))

    for _ in range(min(max(1, concurrency), len(keys))):
        threading.Thread(target=work, daemon=True, name="descry-llm").start()
    return answers


def _retry_after(response) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds, or an HTTP date."""
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _message(error: Exception) -> str:
    body = getattr(error, "body", None)  # the server's {"message": ...}, without the client's "Error code" prefix
    text = str(
        body.get("message") if isinstance(body, dict) and body.get("message") else getattr(error, "message", error)
    ).strip()
    return text.splitlines()[0] if text else error.__class__.__name__
