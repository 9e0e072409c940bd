"""Descry's web app: upload an image, name classes, edit their features, see what drove the prediction.

A thin Gradio layer over the engine. Every handler below is a plain function
of plain values (paths, strings, dicts) that calls `explain` and
`descriptors` and returns figures, dicts and text; the Blocks layout only
wires them to components. Models load once per process and are shared
read-only; each browser session keeps its own descriptor set in `gr.State`.

    python app.py [--model MODEL ...] [--port N] [--share]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import hmac
import html
import inspect
import json
import os
import re
import shutil
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from gradio import FileData

from descriptors import DescriptorError, check_descriptors, load_descriptors, normalise_name, parse_class_list, select_classes
from descriptors.differential import differentiate, merge_pairs, pair_key
from descriptors.generate import DEFAULT_LLM, GenerationCache, generate, make_llm
from descriptors.store import default_cache_dir, merge_descriptors, parse_descriptors, parse_json
from descriptors.validate import EMPTY, has_surrogate
from explain import EmbeddingStore, Explainer, ExplainError, ModelLoadError, load_model, open_image
from explain.engine import LONG_ENCODE
from explain.charts import (
    class_colours,
    contrast_figure,
    descriptor_figure,
    headline,
    model_comparison_figure,
    pairs_figure,
    ranking_figure,
    reference_score,
)
from explain.errors import first_line
from explain.models import configured_models

try:  # On a Hugging Face ZeroGPU Space, GPU work must run inside spaces.GPU; elsewhere this is a no-op.
    import spaces

    on_gpu = spaces.GPU
except ImportError:

    def on_gpu(function):
        return function


ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = ASSETS / "descriptors" / "demo.json"
EXAMPLES = sorted((ASSETS / "examples").glob("*.jpg"))
DEFAULT_CLASSES = "tabby cat, lynx, espresso, cappuccino, dahlia, tree frog, tailed frog"
MAX_CLASSES = 1000  # an ImageNet-sized list still works; beyond that, evaluate offline
MAX_DESCRIPTORS_PER_CLASS = 64  # the DCLIP ImageNet set has at most 19 per class
MAX_DESCRIPTORS = 4000  # per request, all classes together: a heavy request must not hold the others up
MAX_DESCRIPTOR_CHARS = 300  # CLIP reads 77 tokens; a longer line is pasted text, not a feature
CONCURRENT_REQUESTS = 4  # light requests go through while a heavy one runs
NO_LLM = (
    "No LLM is configured. Set `OPENAI_API_KEY` for the OpenAI API, or `OPENAI_BASE_URL` for an "
    "OpenAI-compatible server such as Ollama (`http://localhost:11434/v1`), then restart the app. "
    "On a Hugging Face Space, add them as secrets in the Space's settings."
)


class Models:
    """The configured models, each loaded once on first use and shared by every session."""

    def __init__(self, names: list[str], device: str = "auto"):
        self.names = names
        self.device = device
        self.store = _open_store()
        self._explainers: dict[str, Explainer] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str | None = None) -> Explainer:
        name = name or self.names[0]
        if name not in self.names:
            raise ModelLoadError(f"model {name!r} is not one of this app's models")
        with self._lock:
            if name in self._errors:
                raise ModelLoadError(self._errors[name])
            if name not in self._explainers:
                try:
                    self._explainers[name] = Explainer(load_model(name, self.device), store=self.store)
                    for note in self._explainers[name].model.notes:
                        print(f"note: {note}", flush=True)
                except ModelLoadError as error:
                    self._errors[name] = str(error)
                    raise
            return self._explainers[name]

    def load_error(self, name: str | None = None) -> str | None:
        """Try to load a model; the reason it failed, or None."""
        try:
            self.get(name)
            return None
        except ModelLoadError as error:
            return str(error)


def _open_store() -> EmbeddingStore | None:
    """The on-disk embedding cache shared with the CLI. If its file is or becomes unusable, the store
    prints one warning to the log and turns itself off; requests carry on with the memory caches."""

    def warn(message: str) -> None:
        print(f"warning: {message}; caching in memory only", flush=True)

    store = EmbeddingStore(default_cache_dir() / "embeddings.sqlite3", warn)
    return store if store.usable else None


# --- handlers: plain functions of plain values ------------------------------------------------------------


def explain(models: Models, model_name: str | None, image, classes_text: str, descriptors: dict, on_encode=None):
    """Score the image.

    Returns (ranking figure, descriptor figure, contrast figure, result dict,
    headline HTML, message HTML); the message is "" when all went well.
    """
    empty = (None, None, None, None, "")
    path = image_path(image)
    if path is None:
        return *empty, note("info", "Upload an image, paste one, or pick an example to see the explanation.")
    try:
        chosen = chosen_classes(classes_text, descriptors)
        explainer = models.get(model_name)
        picture = open_image(path, "The image")
        started = time.perf_counter()
        before = explainer.texts_encoded
        result = classify_on_device(explainer, picture, chosen, Path(path).name, on_encode)
        elapsed = (time.perf_counter() - started) * 1000
    except (DescriptorError, ExplainError) as error:
        return *empty, note("error", f"Could not explain: {error}")
    record = result.to_dict()
    contrast = None
    if len(result.predictions) > 1:
        contrast = contrast_figure(result.contrast(), reference_score(result))
        record["contrast"] = result.contrast().to_dict()
    details = [f"{Path(path).name}: scored {len(chosen)} classes in {elapsed:.0f} ms; {explainer.texts_encoded - before} new prompts encoded."]
    if result.fallback_classes:
        details.append("No descriptors, scored with the template: " + ", ".join(result.fallback_classes) + ".")
    problems = [p for p in check_descriptors(chosen) if p.kind != EMPTY]
    if problems:
        details.append(f"Descriptor warning: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return ranking_figure(result), descriptor_figure(result), contrast, record, headline_html(result, " ".join(details)), ""


MAP_SEPARATOR = " · "


def map_choices(record: dict | None, current: str | None = None):
    """The descriptors of the top two classes, for the "where does it match?" picker."""
    if not record or not record.get("predictions"):
        return gr.update(choices=[], value=None)
    choices = [f"{p['class']}{MAP_SEPARATOR}{d['descriptor']}" for p in record["predictions"][:2] if not p.get("fallback") for d in p["descriptors"]]
    return gr.update(choices=choices, value=current if current in choices else (choices[0] if choices else None))


def descriptor_map(models: Models, model_name: str | None, image, classes_text: str, descriptors: dict, choice: str | None, alone: bool = False):
    """The chosen descriptor's map over the image: (overlay image or None, caption)."""
    from explain.overlays import overlay

    path = image_path(image)
    if not path or not choice or MAP_SEPARATOR not in choice:
        return None, "Pick a descriptor to see where in the image it matches."
    class_name, descriptor = choice.split(MAP_SEPARATOR, 1)
    try:
        chosen = chosen_classes(classes_text, descriptors)
        picture = open_image(path, "The image")
        maps = models.get(model_name).heatmaps(picture, chosen, [class_name], alone=alone, name=Path(path).name)
    except (DescriptorError, ExplainError) as error:
        return None, f"No map: {error}"
    entry = next((m for m in maps.maps if m.descriptor == descriptor), None)
    if entry is None:
        return None, "That descriptor is no longer in the list; pick another."
    grids = maps.grids
    low, high = float(grids.min()), float(grids.max())
    height, width = entry.grid.shape
    caption = (
        f"Where “{descriptor}” matches for {class_name}: its score at each of {height}×{width} patches, from {low:.2f} (dark blue) "
        f"to {high:.2f} (yellow), the same units as its bar and one scale for all of {class_name}'s descriptors. "
        f"Prompt: “{entry.prompt}”. Greyed: outside the centre square the model saw. Method: ClearCLIP (Lan et al., ECCV 2024)."
    )
    return overlay(picture, entry.grid, low, high, maps.region), caption


def tell_apart(models: Models, model_name, image, classes_text: str, descriptors: dict, record: dict | None,
               llm_factory=None, gate: LLMGate | None = None, session: str = "local"):
    """Ask the LLM what tells the top class from the runner-up and score those pairs on the image.

    Returns (pairs figure or None, pending {"a", "b", "pairs"} or None, message).
    """
    predictions = (record or {}).get("predictions") or []
    if len(predictions) < 2:
        return None, None, note("info", "Explain an image with at least two classes first.")
    a, b = predictions[0]["class"], predictions[1]["class"]
    if image_path(image) is None:
        return None, None, note("info", "Upload an image, paste one, or pick an example first.")
    llm = (llm_factory or configured_llm)()
    if llm is None:
        return None, None, note("error", NO_LLM)
    refusal = gate.refusal(session, 1) if gate else None
    if refusal:
        return None, None, note("error", f"Could not ask: {refusal}")
    result = differentiate([(a, b)], llm, generation_cache(), concurrency=1)
    found = result.descriptors.get(pair_key(a, b))
    if not found:
        reason = next(iter(result.failures.values()), "no answer")
        return None, None, note("error", f"Could not find what tells {a} from {b}: {reason}.")
    path = image_path(image)
    try:
        picture = open_image(path, "The image")
        explainer = models.get(model_name)
        scored = explainer.classify(picture, {a: [x for x, _ in found], b: [y for _, y in found]}, name=Path(path).name)
    except (DescriptorError, ExplainError) as error:
        return None, None, note("error", f"Could not score the pairs: {error}")
    by_text = {(entry.name, d.descriptor): d.score for entry in scored.predictions for d in entry.descriptors}
    rows = [(x, y, by_text[(a, x)], by_text[(b, y)]) for x, y in found if (a, x) in by_text and (b, y) in by_text]
    # The same reference as the descriptor chart: the mean of every descriptor score in the explanation shown.
    shown = [d["score"] for p in predictions for d in p["descriptors"]]
    figure = pairs_figure(a, b, rows, sum(shown) / len(shown))
    cached = " (from the cache)" if result.cached else ""
    return figure, {"a": a, "b": b, "pairs": found}, note("done", f"{len(found)} pairs of features that tell {a} from {b}{cached}. Add them to both classes' descriptors to see their effect.")


def add_pairs(descriptors: dict, pending: dict | None):
    """Merge the pending pairs into both classes' descriptors; returns (descriptors, message)."""
    if not pending:
        return descriptors, note("info", "Ask what tells the two classes apart first.")
    merged = merge_pairs(descriptors, pending["a"], pending["b"], pending["pairs"])
    added = sum(len(v) for v in merged.values()) - sum(len(v) for v in descriptors.values())
    return merged, note("done", f"Added {added} descriptors to {pending['a']} and {pending['b']}.")


def compare_models(models: Models, names: list[str], image, classes_text: str, descriptors: dict):
    """The same image and descriptors under several models: (comparison HTML, disagreement figure, message)."""
    chosen_models = [name for name in (names or []) if name in models.names]
    if len(chosen_models) < 2:
        return "", None, note("info", "Pick two or more models to compare.")
    path = image_path(image)
    if path is None:
        return "", None, note("info", "Upload an image, paste one, or pick an example first.")
    try:
        chosen = chosen_classes(classes_text, descriptors)
        picture = open_image(path, "The image")
        results = {name: classify_on_device(models.get(name), picture, chosen, Path(path).name) for name in chosen_models}
    except (DescriptorError, ExplainError) as error:
        return "", None, note("error", f"Could not compare: {error}")
    blocks = []
    for name, result in results.items():
        ranking = "".join(f"<li>{html.escape(entry.name)} {entry.probability:.1%}</li>" for entry in result.predictions[:5])
        blocks.append(
            f'<div class="descry-model"><div class="descry-model-name">{html.escape(short_name(name))}</div>'
            f"{headline_html(result)}<ol>{ranking}</ol></div>"
        )
    return f'<div class="descry-compare">{"".join(blocks)}</div>', model_comparison_figure(results), ""


def headline_html(result, details: str = "") -> str:
    """The answer in one line at the top of the results, coloured as in the charts, with the details below."""
    colour = class_colours(result)[result.predictions[0].name]
    top, _, rest = headline(result).partition(" · ")
    parts = [f'<span class="descry-answer" style="color:{colour}">{html.escape(top)}</span>']
    if rest:
        parts.append(f'<span class="descry-versus">{html.escape(rest)}</span>')
    info = f'<div class="descry-details">{html.escape(details)}</div>' if details else ""
    return f'<div class="descry-headline">{" · ".join(parts)}</div>{info}'


def note(kind: str, text: str) -> str:
    """A message for the message area: "error", "info" or "done"; `code` in backticks is shown as code."""
    if not text:
        return ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="descry-message descry-{kind}"{role}>{body}</div>'


@on_gpu
def classify_on_device(explainer: Explainer, picture, descriptors: dict, name: str = "image", on_encode=None):
    return explainer.classify(picture, descriptors, name=name, on_encode=on_encode)


def progress_for(progress) -> Callable[[int], Callable[[int], None] | None]:
    """An `on_encode` that shows long encodes in Gradio's progress display, saying up front how many prompts."""

    def start(total: int):
        if progress is None or total < LONG_ENCODE:
            return None
        done = [0]
        progress((0, total), desc=f"Encoding {total:,} new prompts (cached for next time)")

        def step(count: int) -> None:
            done[0] += count
            progress((done[0], total), desc=f"Encoding {total:,} new prompts (cached for next time)")

        return step

    return start


def chosen_classes(classes_text: str, descriptors: dict) -> dict[str, list[str]]:
    """The classes to score, in the typed order, with this session's descriptors, within the request limits."""
    names = parse_class_list(classes_text or "")
    if len(names) > MAX_CLASSES:
        raise DescriptorError(f"{len(names)} classes is more than the app takes ({MAX_CLASSES}); use the CLI for more")
    chosen = select_classes(descriptors, names)
    check_request_size(chosen)
    return chosen


def check_request_size(chosen: dict[str, list[str]]) -> None:
    """Refuse, in one line, a request that would hold everyone else up."""
    total = 0
    for name, values in chosen.items():
        if has_surrogate(name) or any(has_surrogate(v) for v in values):
            raise DescriptorError(f"class {name!r} contains a lone surrogate, which is not a character")
        kept = [v for v in values if v.strip()]
        if len(kept) > MAX_DESCRIPTORS_PER_CLASS:
            raise DescriptorError(f"class {name!r} has {len(kept)} descriptors; the app takes at most {MAX_DESCRIPTORS_PER_CLASS} per class")
        long = next((v for v in kept if len(v) > MAX_DESCRIPTOR_CHARS), None)
        if long is not None:
            raise DescriptorError(
                f"a descriptor of {name!r} is {len(long):,} characters long; the limit is {MAX_DESCRIPTOR_CHARS} (CLIP reads 77 tokens)"
            )
        total += len(kept)
    if total > MAX_DESCRIPTORS:
        raise DescriptorError(f"these classes have {total:,} descriptors together; the app takes {MAX_DESCRIPTORS:,} per request; use the CLI for more")


def distinct_keys(data: dict[str, list[str]]) -> dict[str, list[str]]:
    """A descriptor object whose keys are distinct classes; two keys for one class is an error naming both."""
    seen: dict[str, str] = {}
    for name in data:
        other = seen.setdefault(normalise_name(name), name)
        if other != name:
            raise DescriptorError(f"descriptors name the same class twice: {other!r} and {name!r} (names match ignoring case and underscores)")
    return data


def editor_choices(classes_text: str, descriptors: dict, editing: str | None):
    """The class picker's choices and the selected class's features, after the class list changed."""
    names = parse_class_list(classes_text or "")[:MAX_CLASSES]
    keys = {normalise_name(name) for name in names}
    selected = editing if editing and normalise_name(editing) in keys else (names[0] if names else None)
    return gr.update(choices=names, value=selected), features_text(descriptors, selected)


def features_text(descriptors: dict, class_name: str | None) -> str:
    """A class's descriptors, one per line, for the editor."""
    if not class_name:
        return ""
    return "\n".join(_lookup(descriptors, class_name) or [])


def edit_features(descriptors: dict, class_name: str | None, text: str) -> dict:
    """A copy of the session's descriptors with one class's features replaced by the edited lines."""
    if not class_name:
        return descriptors
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    updated = {name: list(values) for name, values in descriptors.items()}
    key = _key_for(updated, class_name) or class_name
    updated[key] = lines
    return updated


def remove_class(classes_text: str, class_name: str | None) -> str:
    """The class list without `class_name`."""
    if not class_name:
        return classes_text
    return ", ".join(name for name in parse_class_list(classes_text or "") if normalise_name(name) != normalise_name(class_name))


def generate_missing(descriptors: dict, classes_text: str, llm_factory=None, gate: LLMGate | None = None, session: str = "local"):
    """Fill classes that have no descriptors using the configured LLM; returns (descriptors, status)."""
    try:
        names = list(chosen_classes(classes_text, descriptors))
    except DescriptorError as error:
        return descriptors, note("error", f"Could not generate: {error}")
    missing = [name for name in names if not any(v.strip() for v in _lookup(descriptors, name) or [])]
    if not missing:
        return descriptors, note("info", "Every class already has descriptors.")
    llm = (llm_factory or configured_llm)()
    if llm is None:
        return descriptors, note("error", NO_LLM)
    refusal = gate.refusal(session, len(missing)) if gate else None
    if refusal:
        return descriptors, note("error", f"Could not generate: {refusal}")
    result = generate(missing, llm, generation_cache(), concurrency=4)
    merged, _ = merge_descriptors(descriptors, result.descriptors)
    status = [f"Generated descriptors for {len(result.descriptors)} of {len(missing)} classes with {llm.model}."]
    status += [f"Could not generate {name}: {reason}." for name, reason in result.failures.items()]
    return merged, note("error" if result.failures else "done", " ".join(status))


class LLMGate:
    """Who may spend the owner's LLM key, and how fast.

    `DESCRY_LLM_PUBLIC=0` turns generation off for visitors; `DESCRY_LLM_TOKEN`
    makes it need that token (an API argument), which also turns the page's
    button off. Otherwise each session may ask `per_session` times a minute,
    everyone together `per_minute` times, for at most `max_classes` classes a
    request.
    """

    def __init__(self, per_session: int = 5, per_minute: int = 30, max_classes: int = 20, clock=time.monotonic):
        self.public = os.environ.get("DESCRY_LLM_PUBLIC", "1").strip().lower() not in ("0", "false", "no", "off")
        self.token = os.environ.get("DESCRY_LLM_TOKEN") or None
        self.per_session, self.per_minute, self.max_classes = per_session, per_minute, max_classes
        self.clock = clock
        self._calls: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def refusal(self, session: str, classes: int, token: str | None = None) -> str | None:
        """Why this request may not go to the LLM, or None (and then it is counted)."""
        if self.token is not None:
            if not token or not hmac.compare_digest(token, self.token):
                return "LLM generation on this app needs the owner's token (the `token` argument of /generate_descriptors)."
        elif not self.public:
            return "LLM generation is turned off on this app by its owner."
        if classes > self.max_classes:
            return f"Ask for at most {self.max_classes} classes at a time ({classes} were asked for)."
        with self._lock:
            now = self.clock()
            self._calls = [(when, who) for when, who in self._calls if now - when < 60]
            if sum(1 for _, who in self._calls if who == session) >= self.per_session:
                return f"This session has asked the LLM {self.per_session} times in the last minute; wait a minute."
            if len(self._calls) >= self.per_minute:
                return "The LLM is busy with other visitors' requests; try again in a minute."
            self._calls.append((now, session))
        return None


def session_of(request: gr.Request | None) -> str:
    """A key for the visitor: Gradio's session, else the client's address."""
    if request is None:
        return "local"
    return getattr(request, "session_hash", None) or getattr(getattr(request, "client", None), "host", None) or "unknown"


def configured_llm():
    """An LLM from the environment, or None when neither a key nor a base URL is set."""
    api_key, base_url = os.environ.get("OPENAI_API_KEY"), os.environ.get("OPENAI_BASE_URL")
    if not api_key and not base_url:
        return None
    model = os.environ.get("DESCRY_LLM_MODEL", DEFAULT_LLM)
    return make_llm(model, base_url, api_key, timeout=float(os.environ.get("DESCRY_LLM_TIMEOUT", 30)), max_retries=1)


def reset_descriptors(classes_text: str) -> dict:
    """The shipped set, plus any cached LLM answers for the listed classes it lacks."""
    shipped = load_descriptors(SHIPPED)
    cache = generation_cache()
    model = os.environ.get("DESCRY_LLM_MODEL", DEFAULT_LLM)
    cached = {}
    for name in parse_class_list(classes_text or "")[:MAX_CLASSES]:
        if _key_for(shipped, name) is None:
            hit = cache.get(model, name)
            if hit:
                cached[name] = hit
    return merge_descriptors(shipped, cached)[0]


def upload_descriptors(file, descriptors: dict, classes_text: str):
    """Replace the session's set with an uploaded file; returns (descriptors, classes text, status)."""
    path = image_path(file)
    if path is None:
        return descriptors, classes_text, note("info", "No file was uploaded.")
    try:
        text = Path(path).read_text(encoding="utf-8")
        uploaded = distinct_keys(parse_descriptors(parse_json(text, "the uploaded file"), "the uploaded file"))
        if not uploaded:
            raise DescriptorError("the uploaded file has no classes")
        if len(uploaded) > MAX_CLASSES:
            raise DescriptorError(f"the uploaded file has {len(uploaded)} classes; the app takes {MAX_CLASSES}")
    except UnicodeDecodeError:
        return descriptors, classes_text, note("error", "Could not load the file: it is not UTF-8 text.")
    except DescriptorError as error:
        return descriptors, classes_text, note("error", f"Could not load the file: {error}")
    except OSError as error:
        return descriptors, classes_text, note("error", f"Could not load the file: {Path(path).name} cannot be read ({error.__class__.__name__}).")
    return uploaded, ", ".join(uploaded), note("done", f"Loaded {len(uploaded)} classes from the uploaded file.")


DOWNLOADS = Path(tempfile.gettempdir()) / "descry-downloads"


MAX_DOWNLOADS = 200  # descriptor files kept for the download button; the oldest go first


def download_file(descriptors: dict) -> str:
    """The session's descriptor set as a JSON file for the download button.

    This runs after every edit, so files are named by content: an unchanged
    set reuses its file instead of leaving a new folder behind each time,
    and only the newest `MAX_DOWNLOADS` are kept.
    """
    text = json.dumps(descriptors, ensure_ascii=False, indent=2) + "\n"
    folder = DOWNLOADS / hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
    path = folder / "descriptors.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        folders = sorted((p for p in DOWNLOADS.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - MAX_DOWNLOADS)]:
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    return str(path)


def api_classify(models: Models, image, classes: str, descriptors: str = "", model: str = "") -> dict:
    """API: classify an image; `descriptors` is a JSON object (empty: the shipped demo set)."""
    try:
        data = distinct_keys(parse_descriptors(parse_json(descriptors, "descriptors"), "descriptors")) if descriptors.strip() else load_descriptors(SHIPPED)
    except DescriptorError as error:
        raise gr.Error(str(error)) from None
    path = image_path(image)
    if path is None:
        raise gr.Error("no image was given")
    try:
        explainer = models.get(model or None)
        result = classify_on_device(explainer, open_image(path, "the image"), chosen_classes(classes, data), upload_name(image))
    except (DescriptorError, ExplainError) as error:
        raise gr.Error(str(error)) from None
    record = result.to_dict()
    if len(result.predictions) > 1:
        record["contrast"] = result.contrast().to_dict()
    return record


def api_heatmap(models: Models, image, classes: str, class_name: str, descriptor: str, descriptors: str = "", alone: bool = False, model: str = "") -> dict:
    """API: one descriptor's map, as plain numbers."""
    try:
        data = distinct_keys(parse_descriptors(parse_json(descriptors, "descriptors"), "descriptors")) if descriptors.strip() else load_descriptors(SHIPPED)
        path = image_path(image)
        if path is None:
            raise DescriptorError("no image was given")
        chosen = chosen_classes(classes, data)
        maps = models.get(model or None).heatmaps(open_image(path, "the image"), chosen, [class_name], alone=bool(alone), name=upload_name(image))
    except (DescriptorError, ExplainError) as error:
        raise gr.Error(str(error)) from None
    entry = next((m for m in maps.maps if m.descriptor == descriptor), None)
    if entry is None:
        raise gr.Error(f"{descriptor!r} is not one of the descriptors of {class_name!r}")
    return {
        "grid": entry.grid.tolist(), "grid_size": list(entry.grid.shape), "prompt": entry.prompt,
        "region": list(maps.region), "input_size": maps.input_size, "class": entry.class_name, "descriptor": entry.descriptor,
    }  # fmt: skip


def api_differential(class_a: str, class_b: str, llm_factory=None, gate: LLMGate | None = None, session: str = "local", token: str = "") -> dict:
    """API: differential feature pairs for two classes."""
    llm = (llm_factory or configured_llm)()
    if llm is None:
        raise gr.Error(NO_LLM.replace("`", ""))
    a, b = (class_a or "").strip(), (class_b or "").strip()
    if not a or not b or normalise_name(a) == normalise_name(b):
        raise gr.Error("give two different classes")
    refusal = gate.refusal(session, 1, token) if gate else None
    if refusal:
        raise gr.Error(refusal.replace("`", ""))
    result = differentiate([(a, b)], llm, generation_cache(), concurrency=1)
    found = result.descriptors.get(pair_key(a, b))
    if not found:
        raise gr.Error(f"no pairs for {a} and {b}: {next(iter(result.failures.values()), 'no answer')}")
    return {"pairs": found, "cached": bool(result.cached)}


def api_generate(classes: str, llm_factory=None, gate: LLMGate | None = None, session: str = "local", token: str = "") -> dict:
    """API: generate descriptors for classes with the configured LLM."""
    llm = (llm_factory or configured_llm)()
    if llm is None:
        raise gr.Error(NO_LLM.replace("`", ""))
    names = list(dict.fromkeys(parse_class_list(classes or "")))
    if not names:
        raise gr.Error("give at least one class name")
    refusal = gate.refusal(session, len(names), token) if gate else None
    if refusal:
        raise gr.Error(refusal.replace("`", ""))
    result = generate(names, llm, generation_cache(), concurrency=4)
    return {"descriptors": result.descriptors, "failures": result.failures}


def generation_cache() -> GenerationCache:
    """One LLM-answer cache per cache folder for the whole app, so that a broken file is reported once in the log."""
    return _generation_cache(default_cache_dir() / "generations.sqlite3")


@functools.cache
def _generation_cache(path: Path) -> GenerationCache:
    return GenerationCache(path, lambda message: print(f"warning: {message}", flush=True))


MAX_ZIP_BYTES = int(float(os.environ.get("DESCRY_MAX_ZIP_MB", 200)) * 2**20)  # the upload itself
MAX_UNZIPPED_BYTES = 4 * MAX_ZIP_BYTES  # what it may expand to
MAX_ZIP_FILES = 20_000


WORK = Path(os.environ.get("DESCRY_WORK_DIR") or Path(tempfile.gettempdir()) / "descry-work")
MAX_WORK_BYTES = int(float(os.environ.get("DESCRY_WORK_MB", 2048)) * 2**20)  # unpacked datasets and reports, together
KEEP_WORK_FOLDERS = 2  # the newest are kept even over the cap: their run may still be writing


def work_folder(kind: str) -> Path:
    """A new folder for one evaluation's files, after pruning the oldest so the total stays bounded."""
    prune_work()
    WORK.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=WORK))


def prune_work(max_bytes: int | None = None, keep: int = KEEP_WORK_FOLDERS) -> None:
    """Delete the oldest work folders until the rest fit in `max_bytes`, never the `keep` newest."""
    if not WORK.is_dir():
        return
    limit = MAX_WORK_BYTES if max_bytes is None else max_bytes
    folders = sorted((p for p in WORK.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) for p in folders}
    total = sum(sizes.values())
    for folder in reversed(folders[keep:]):  # oldest first
        if total <= limit:
            break
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]


def extract_zip(path: str, target: Path) -> Path:
    """Unpack an uploaded zip safely: bounded size and count, no path may leave `target`, no links."""
    if Path(path).stat().st_size > MAX_ZIP_BYTES:
        raise DescriptorError(f"the zip is larger than {MAX_ZIP_BYTES // 2**20} MB")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DescriptorError("the upload is not a zip file") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_FILES:
            raise DescriptorError(f"the zip holds {len(members)} files; the limit is {MAX_ZIP_FILES}")
        if sum(member.file_size for member in members) > MAX_UNZIPPED_BYTES:
            raise DescriptorError(f"the zip would unpack to more than {MAX_UNZIPPED_BYTES // 2**20} MB")
        root = target.resolve()
        for member in members:
            destination = (root / member.filename).resolve()
            if not destination.is_relative_to(root):
                raise DescriptorError(f"the zip entry {member.filename!r} points outside the upload folder")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DescriptorError(f"the zip entry {member.filename!r} is a symbolic link")
        try:
            archive.extractall(root)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, RuntimeError) as error:
            # A directory that lies about sizes or checksums, an unsupported method, a password.
            shutil.rmtree(root, ignore_errors=True)
            raise DescriptorError(f"the zip is damaged or unsupported ({first_line(error)})") from None
    # A zip of one top folder holding the class folders is common: step into it.
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and any(child.is_dir() for child in entries[0].iterdir()):
        return entries[0]
    return root


def data_folder(name: str) -> Path:
    """A folder under $DESCRY_DATA_ROOT; nothing outside that root can be reached, links included."""
    root_setting = os.environ.get("DESCRY_DATA_ROOT")
    if not root_setting:
        raise DescriptorError("no server folder is offered: set DESCRY_DATA_ROOT when starting the app")
    root = Path(root_setting).resolve()
    folder = (root / (name or "")).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise DescriptorError(f"{name!r} is not a folder under the data root")
    return folder


def data_folders() -> list[str]:
    """The dataset folders offered under $DESCRY_DATA_ROOT (one level down)."""
    root_setting = os.environ.get("DESCRY_DATA_ROOT")
    if not root_setting or not Path(root_setting).is_dir():
        return []
    root = Path(root_setting).resolve()
    return sorted(
        p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and p.resolve().is_relative_to(root)
    )


def evaluate_upload(models: Models, model_names: list[str], zip_file, folder_name: str, descriptors: dict, limit, progress=None):
    """Evaluate a zipped or server-side ImageFolder; returns (metrics rows, report path, views, view choices, status)."""
    from explain.evaluate import METHODS, PromptRecipe, load_dataset, run_evaluation
    from explain.report import write_report

    nothing = ([], None, {}, gr.update(choices=[], value=None))
    folder, shown = None, "the dataset"
    try:
        if zip_file is not None:
            shown = Path(image_path(zip_file)).name  # Gradio keeps the visitor's file name
            work = work_folder("data")
            try:
                folder = extract_zip(image_path(zip_file), work)
            except DescriptorError:
                shutil.rmtree(work, ignore_errors=True)  # a refused upload leaves nothing behind
                raise
        elif folder_name:
            folder, shown = data_folder(folder_name), folder_name
        else:
            return *nothing, "Upload a zip of an ImageFolder tree, or pick a server folder."
        names = [name for name in (model_names or models.names[:1]) if name in models.names]
        explainers = {name: models.get(name) for name in names}
        # Nothing outside the data root (or the upload's own folder) is read, symbolic links included.
        root = Path(os.environ["DESCRY_DATA_ROOT"]) if zip_file is None else folder
        dataset = load_dataset(folder, int(limit) if limit else None, root=root)

        def step(label: str, total: int):
            done = [0]

            def advance(count: int) -> None:
                done[0] += count
                if progress is not None:
                    progress((done[0], total), desc=f"Embedding {label}")

            return advance

        run = run_evaluation(dataset, descriptors, explainers, PromptRecipe(), models.store, workers=2, progress=step)
        # The visitor sees their own names, never the server's folders.
        run.unreadable = {_shown_path(path, folder, shown): _shown_path(reason, folder, shown) for path, reason in run.unreadable.items()}
        report = write_report(run, work_folder("report"))["report.html"]
    except (DescriptorError, ExplainError) as error:
        return *nothing, f"**Could not evaluate:** {md(_shown_path(str(error), folder, shown))}"
    rows = [
        [short_name(model), method, *(_rounded(methods[method][key]) for key in ("acc1", "acc5", "mean_per_class_recall", "mean_confidence", "ece"))]
        for model, methods in run.metrics.items()
        for method in METHODS
    ]
    predicted = {short_name(m): e.methods["descriptors"].logits.argmax(axis=1) for m, e in run.evaluations.items()}

    def caption(i: int) -> str:
        guesses = [run.dataset.classes[p[i]] for p in predicted.values()]
        if len(predicted) == 1:
            return f"{run.dataset.labels[i]} → {guesses[0]}"
        return f"{run.dataset.labels[i]} → " + ", ".join(f"{m}: {g}" for m, g in zip(predicted, guesses))

    # Only views with something in them are offered; names use the short model names.
    galleries = {}
    for name, indices in run.views.items():
        if indices:
            for model in run.evaluations:
                name = name.replace(model, short_name(model))
            galleries[f"{name} ({len(indices)})"] = [(str(run.dataset.paths[i]), caption(i)) for i in indices[:60]]
    notes = [f"Evaluated {len(run.dataset.paths)} images in {len(run.dataset.classes)} classes."]
    if run.missing:
        notes.append(f"{len(run.missing)} classes had no descriptors and used the template: {md(', '.join(run.missing[:20]))}.")
    if run.unreadable:
        notes.append(f"{len(run.unreadable)} images could not be read and were left out: " + md("; ".join(list(run.unreadable.values())[:5])) + ".")
    first = next(iter(galleries), None)
    return rows, str(report), galleries, gr.update(choices=list(galleries), value=first), " ".join(notes)


def short_name(model: str) -> str:
    """A model as the tables show it: the last part of its hub id or folder ("clip-vit-base-patch32")."""
    return Path(model.rstrip("/")).name or model


def _shown_path(text: str, folder: Path | None, shown: str) -> str:
    """`text` with the server's dataset folder written as the name the visitor knows it by."""
    if folder is None:
        return text
    for form in {str(folder), str(Path(folder).resolve())}:
        text = text.replace(form, shown)
    return text


def view_gallery(galleries: dict, name: str | None):
    """The thumbnails of one view."""
    return (galleries or {}).get(name or "", [])


def upload_name(value) -> str:
    """The name the visitor's file had on their machine (Gradio keeps it beside the stored copy)."""
    original = value.get("orig_name") if isinstance(value, dict) else getattr(value, "orig_name", None)
    return original or Path(image_path(value) or "image").name


def image_path(value) -> str | None:
    """A file path from whatever a Gradio file or image input delivers (path, dict or FileData)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path")
    return getattr(value, "path", None)


def _rounded(value: float) -> float | None:
    """A metric for the table: four decimals, or empty where it is not defined (acc5 below five classes)."""
    return None if value != value else round(value, 4)


def md(text: str) -> str:
    """User text made inert for Markdown: HTML escaped, Markdown punctuation backslashed."""
    return re.sub(r"([\\`*_{}\[\]()#+!|>~-])", r"\\\1", html.escape(text, quote=False))


def _key_for(descriptors: dict, class_name: str) -> str | None:
    wanted = normalise_name(class_name)
    return next((name for name in descriptors if normalise_name(name) == wanted), None)


def _lookup(descriptors: dict, class_name: str) -> list[str] | None:
    key = _key_for(descriptors, class_name)
    return descriptors[key] if key is not None else None


# --- shareable state ------------------------------------------------------------------------------------------

EXAMPLE_CLASSES = {  # each example with its class and confusable neighbours from the demo set
    "tabby-cat": "tabby cat, lynx, tree frog",
    "espresso": "espresso, cappuccino, dahlia",
    "rocket": "rocket, space shuttle, astronaut",
    "astronaut": "astronaut, space shuttle, rocket",
    "pagoda": "pagoda, palace, rocket",
    "dahlia": "dahlia, chrysanthemum, tabby cat",
}
FIRST_EXAMPLE = ASSETS / "examples" / "tabby-cat.jpg"
MAX_LINK_CHARS = 6000  # what goes after "?s=": browsers and servers take URLs of 8 KB and more
MAX_STATE_BYTES = 256 * 1024  # what a link may decompress to


def example_name(image) -> str | None:
    """The example an image is, by content (an upload that merely shares a name is not one)."""
    path = image_path(image)
    if not path or not Path(path).is_file():
        return None
    digest = _file_digest(Path(path))
    return next((example.stem for example in EXAMPLES if _file_digest(example) == digest), None)


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, size: int, mtime: float) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def _file_digest(path: Path) -> str:
    info = path.stat()
    return _digest_of(str(path), info.st_size, info.st_mtime)


def encode_state(classes_text: str, descriptors: dict, image=None) -> str:
    """The classes, their descriptors and (for an example) the image, as a compact URL-safe string."""
    names = parse_class_list(classes_text or "")
    payload = {"v": 1, "c": classes_text or "", "d": {name: list(_lookup(descriptors, name) or []) for name in names}}
    example = example_name(image)
    if example:
        payload["i"] = example
    packed = zlib.compress(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)
    token = base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")
    if len(token) > MAX_LINK_CHARS:
        raise DescriptorError(
            f"this set is too large for a link ({len(token):,} characters; the limit is {MAX_LINK_CHARS:,}); use Download JSON instead"
        )
    return token


def decode_state(token: str) -> tuple[str, dict, str | None]:
    """(classes text, descriptors, example image path or None) from a link, or DescriptorError saying why not."""
    if len(token) > MAX_LINK_CHARS:
        raise DescriptorError(f"the link's state is {len(token):,} characters long; the limit is {MAX_LINK_CHARS:,}")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        unpacker = zlib.decompressobj()
        text = unpacker.decompress(packed, MAX_STATE_BYTES)
        if unpacker.unconsumed_tail:
            raise DescriptorError(f"the link's state unpacks to more than {MAX_STATE_BYTES // 1024} KB")
        text = text.decode("utf-8")
    except (binascii.Error, ValueError, zlib.error) as error:
        if isinstance(error, DescriptorError):
            raise
        raise DescriptorError("the link's state is damaged (it is not what the Copy link button makes)") from None
    payload = parse_json(text, "the link's state")
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), str) or not isinstance(payload.get("d"), dict):
        raise DescriptorError("the link's state is not a Descry explanation")
    descriptors = distinct_keys(parse_descriptors(payload["d"], "the link's descriptors"))
    check_request_size(chosen_classes(payload["c"], descriptors))
    example = payload.get("i")
    image = next((str(p) for p in EXAMPLES if p.stem == example), None) if isinstance(example, str) else None
    return payload["c"], descriptors, image


# --- layout ----------------------------------------------------------------------------------------------------

CSS = """
#descry-message:empty, #descry-message > div:empty { display: none; }
.descry-message { padding: 0.55em 0.8em; border-radius: 8px; border-left: 4px solid; margin: 0; line-height: 1.4; }
.descry-error { border-color: #c62828; background: rgba(198, 40, 40, 0.10); }
.descry-info { border-color: #1f6fb2; background: rgba(31, 111, 178, 0.10); }
.descry-done { border-color: #2e7d32; background: rgba(46, 125, 50, 0.10); }
.descry-headline { font-size: 1.15rem; line-height: 1.5; }
.descry-answer { font-size: 1.55rem; font-weight: 700; }
.descry-versus { color: var(--body-text-color-subdued); }
.descry-details { color: var(--body-text-color-subdued); font-size: 0.85rem; margin-top: 0.2em; }
.descry-status { min-height: 1.5em; }
.descry-compare { display: flex; flex-wrap: wrap; gap: 1em; }
.descry-model { flex: 1 1 240px; }
.descry-model-name { font-weight: 700; }
/* Charts have transparent backgrounds; in dark mode their own text and grid follow the page. */
.dark .js-plotly-plot g[class$="tick"] text, .dark .js-plotly-plot .g-gtitle text,
.dark .js-plotly-plot .g-xtitle text, .dark .js-plotly-plot .g-ytitle text, .dark .js-plotly-plot .legendtext {
    fill: var(--body-text-color) !important;
}
.dark .js-plotly-plot .gridlayer path, .dark .js-plotly-plot .zerolinelayer path { stroke: rgba(255, 255, 255, 0.18) !important; }
"""

# After the server made the link's token, the browser turns it into a URL and tries to copy it.
LINK_JS = """
(token) => {
    if (!token) { return ""; }
    const url = window.location.origin + window.location.pathname + "?s=" + token;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}
"""


def build_app(models: Models, load_error: str | None = None) -> gr.Blocks:
    shipped = load_descriptors(SHIPPED)
    first_classes_text = EXAMPLE_CLASSES[FIRST_EXAMPLE.stem]
    first_classes = parse_class_list(first_classes_text)
    # Gradio keeps every upload and every output file in its cache: sweep files older than a day, hourly.
    with gr.Blocks(title="Descry: explainable classification by description", delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            "## Descry: why did the model choose that?\nCLIP scores each class's visual features against the image; "
            "the class with the best average wins, and the charts show which features decided it. "
            "Edit a class's features and the answer updates as you type."
        )
        session = gr.State(shipped)
        remembered = gr.BrowserState({}, storage_key="descry-session")
        with gr.Tab("Explain an image"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    startup = note("error", f"The model could not be loaded. {load_error} Start the app with `python app.py --model DIR`.") if load_error else ""
                    message = gr.HTML(startup, elem_id="descry-message")
                    image = gr.Image(
                        str(FIRST_EXAMPLE), type="filepath", image_mode=None, sources=["upload", "clipboard", "webcam"],
                        label="Image", height=260,
                    )  # fmt: skip
                    classes = gr.Textbox(first_classes_text, label="Classes", info="Comma-separated. Press Enter to re-score.")
                    model = gr.Dropdown(models.names, value=models.names[0], label="Model", visible=len(models.names) > 1)
                    with gr.Group():
                        editing = gr.Dropdown(first_classes, value=first_classes[0], label="Edit the features of")
                        features = gr.Textbox(
                            features_text(shipped, first_classes[0]), lines=6, max_lines=16, label="Features, one per line",
                            placeholder="No features yet: type one per line, or press Generate with LLM.",
                        )  # fmt: skip
                        with gr.Row():
                            generate_button = gr.Button("Generate with LLM", size="sm")
                            remove_button = gr.Button("Remove class", size="sm")
                            reset_button = gr.Button("Reset", size="sm")
                        with gr.Row():
                            download_button = gr.DownloadButton("Download JSON", value=download_file(shipped), size="sm")
                            upload_button = gr.UploadButton("Upload JSON", file_types=[".json"], size="sm")
                            link_button = gr.Button("Copy link", size="sm")
                    link_token = gr.Textbox(visible=False)
                    link_box = gr.Textbox(label="Link to this explanation", visible=False, interactive=False, buttons=["copy"], elem_id="descry-link")
                    examples = gr.Examples(
                        [[str(p), EXAMPLE_CLASSES.get(p.stem, DEFAULT_CLASSES)] for p in EXAMPLES], inputs=[image, classes],
                        label="Examples, each with its classes", examples_per_page=6,
                    )  # fmt: skip
                with gr.Column(scale=6, min_width=320):
                    headline_box = gr.HTML(elem_id="descry-headline")
                    descriptor_plot = gr.Plot(label="Descriptors of the top classes", show_label=False, elem_id="descriptor-plot")
                    with gr.Accordion("Where in the image does a descriptor match?", open=False, elem_id="descry-where"):
                        with gr.Row():
                            where_picker = gr.Dropdown([], label="Descriptor", scale=4)
                            where_alone = gr.Checkbox(False, label="the descriptor alone (without the class name)", scale=2)
                        where_image = gr.Image(label="Map", interactive=False, height=320, elem_id="descry-map")
                        where_caption = gr.Markdown(elem_id="descry-map-caption")
                    contrast_plot = gr.Plot(label="Top class against the runner-up", show_label=False, elem_id="contrast-plot")
                    with gr.Row():
                        apart_button = gr.Button("What tells the top class from the runner-up?", size="sm", elem_id="descry-apart")
                        add_pairs_button = gr.Button("Add to descriptors", size="sm", visible=False, elem_id="descry-add-pairs")
                    pairs_plot = gr.Plot(show_label=False, visible=False, elem_id="pairs-plot")
                    pending_pairs = gr.State(None)
                    ranking_plot = gr.Plot(label="Class ranking", show_label=False, elem_id="ranking-plot")
                    with gr.Accordion("Compare models on this image", open=False, visible=len(models.names) > 1):
                        compare_models_box = gr.CheckboxGroup([(short_name(n), n) for n in models.names], value=models.names, label="Models")
                        compare_button = gr.Button("Compare", size="sm")
                        comparison = gr.HTML(elem_id="descry-comparison")
                        comparison_plot = gr.Plot(show_label=False, elem_id="comparison-plot")
                    with gr.Accordion("Result as JSON", open=False):
                        result_json = gr.JSON(label="Result")

        with gr.Tab("Evaluate a dataset"):
            gr.Markdown(
                "Evaluate an ImageFolder tree (one folder per class) with this session's descriptors: "
                "accuracy by description, by the template baseline, and with random descriptors as a control."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=4, min_width=320):
                    dataset_zip = gr.File(label=f"Zip of an ImageFolder tree (up to {MAX_ZIP_BYTES // 2**20} MB)", file_types=[".zip"])
                    server_folder = gr.Dropdown(data_folders(), label="Or a folder on the server", visible=bool(os.environ.get("DESCRY_DATA_ROOT")))
                    eval_models = gr.CheckboxGroup(
                        [(short_name(n), n) for n in models.names], value=models.names, label="Models", visible=len(models.names) > 1
                    )
                    limit = gr.Number(0, label="Evaluate at most this many images (0: all)", precision=0, minimum=0)
                    evaluate_button = gr.Button("Evaluate", variant="primary")
                    eval_status = gr.Markdown(elem_classes="descry-status", elem_id="eval-status")
                    report_file = gr.File(label="report.html (self-contained)", interactive=False, visible=False)
                with gr.Column(scale=6, min_width=320):
                    metrics_table = gr.Dataframe(
                        headers=["model", "method", "acc1", "acc5", "mean per-class recall", "mean confidence", "ece"],
                        label="Metrics", interactive=False, visible=False,
                    )  # fmt: skip
                    view_picker = gr.Dropdown([], label="View", visible=False)
                    view_images = gr.Gallery(label="Samples in this view (true → predicted)", columns=4, height=360, visible=False)
            galleries = gr.State({})

        # --- evaluation -------------------------------------------------------------------------------------

        def run_evaluation_tab(model_names, zip_value, folder_value, descriptors, limit_value, progress=gr.Progress()):
            rows, report, views_found, picker, status = evaluate_upload(models, model_names, zip_value, folder_value, descriptors, limit_value, progress)
            ran = report is not None
            return (
                gr.update(value=rows, visible=ran), gr.update(value=report, visible=ran), views_found,
                gr.update(**(picker if isinstance(picker, dict) else {}), visible=ran and bool(views_found)), status,
            )  # fmt: skip

        def show_view(views_found, name):
            items = view_gallery(views_found, name)
            return gr.update(value=items, visible=bool(items))

        evaluate_button.click(
            run_evaluation_tab, [eval_models, dataset_zip, server_folder, session, limit],
            [metrics_table, report_file, galleries, view_picker, eval_status], api_visibility="private",
            show_progress_on=[eval_status],
        ).then(show_view, [galleries, view_picker], view_images, api_visibility="private")  # fmt: skip
        view_picker.change(show_view, [galleries, view_picker], view_images, api_visibility="private")

        # --- explaining -------------------------------------------------------------------------------------

        charts = [ranking_plot, descriptor_plot, contrast_plot, result_json, headline_box]
        quiet = dict(api_visibility="private", show_progress="hidden")

        def score(model_name, image_value, classes_text, descriptors, current=None):
            """Score after a user action: its message replaces the last one (or clears it)."""
            shown = explain(models, model_name, image_value, classes_text, descriptors)
            return *shown, map_choices(shown[3], current)

        def score_after(model_name, image_value, classes_text, descriptors, current=None, progress=gr.Progress()):
            """Score as a follow-on of another action: keep that action's message unless scoring fails.

            A large new set (an upload, a reset, an LLM's answers) shows its encoding progress over the message area.
            """
            *shown, problem = explain(models, model_name, image_value, classes_text, descriptors, progress_for(progress))
            return *shown, problem or gr.skip(), map_choices(shown[3], current)

        # The image goes in unprocessed (a path), so that a file that is no image becomes a message, not a crash.
        fresh = dict(fn=score, inputs=[model, image, classes, session, where_picker], outputs=[*charts, message, where_picker], preprocess=False, **quiet)
        follow = dict(
            fn=score_after, inputs=[model, image, classes, session, where_picker], outputs=[*charts, message, where_picker], preprocess=False,
            api_visibility="private", show_progress="minimal", show_progress_on=[message],
        )  # fmt: skip

        def remember(descriptors, classes_text):
            return {"classes": classes_text, "descriptors": descriptors}, download_file(descriptors)

        keep = dict(fn=remember, inputs=[session, classes], outputs=[remembered, download_button], **quiet)

        def type_features(model_name, image_value, classes_text, descriptors, class_name, text, current):
            """One request per keystroke: edit, score, remember, refresh the download and the map picker."""
            updated = edit_features(descriptors, class_name, text)
            shown = explain(models, model_name, image_value, classes_text, updated)
            saved, download = remember(updated, classes_text)
            return updated, *shown, saved, download, map_choices(shown[3], current)

        features.input(
            type_features, [model, image, classes, session, editing, features, where_picker],
            [session, *charts, message, remembered, download_button, where_picker], trigger_mode="always_last", preprocess=False, **quiet,
        )  # fmt: skip

        def show_where(model_name, image_value, classes_text, descriptors, choice, alone):
            return descriptor_map(models, model_name, image_value, classes_text, descriptors, choice, alone)

        for event in (where_picker.change, where_alone.change):
            event(
                show_where, [model, image, classes, session, where_picker, where_alone], [where_image, where_caption],
                preprocess=False, api_visibility="private", trigger_mode="always_last",
            )  # fmt: skip
        # A new image (uploaded, pasted, an example, or restored from a link) is scored without touching the message.
        # A visitor's own upload is a new action, so it is also scored as one: its message replaces the last one.
        # Both give the same message whatever their order: an error if there is one, else the last one or none.
        image.change(editor_choices, [classes, session, editing], [editing, features], **quiet).then(**follow).then(**keep)
        image.input(**fresh)
        examples.dataset.click(lambda: "", None, message, **quiet)  # picking an example is a new action too
        model.change(**fresh)
        classes.submit(editor_choices, [classes, session, editing], [editing, features], **quiet).then(**fresh).then(**keep)
        # Leaving the box (often to click a button) is no new action: it must not wipe that button's message.
        classes.blur(editor_choices, [classes, session, editing], [editing, features], **quiet).then(**follow).then(**keep)
        editing.input(features_text, [session, editing], features, **quiet)
        remove_button.click(remove_class, [classes, editing], classes, **quiet).then(
            editor_choices, [classes, session, editing], [editing, features], **quiet
        ).then(**fresh).then(**keep)

        def compare(names, image_value, classes_text, descriptors):
            return compare_models(models, names, image_value, classes_text, descriptors)

        compare_button.click(
            compare, [compare_models_box, image, classes, session], [comparison, comparison_plot, message],
            preprocess=False, api_visibility="private",
        )  # fmt: skip

        gate = LLMGate()

        def fill_with_llm(descriptors, classes_text, request: gr.Request):
            return generate_missing(descriptors, classes_text, gate=gate, session=session_of(request))

        def ask_apart(model_name, image_value, classes_text, descriptors, record, request: gr.Request):
            figure, pending, text = tell_apart(models, model_name, image_value, classes_text, descriptors, record, gate=gate, session=session_of(request))
            shown = figure is not None
            return gr.update(value=figure, visible=shown), pending, gr.update(visible=shown), text

        apart_button.click(
            ask_apart, [model, image, classes, session, result_json], [pairs_plot, pending_pairs, add_pairs_button, message],
            preprocess=False, api_visibility="private", show_progress_on=[message],
        )  # fmt: skip
        add_pairs_button.click(add_pairs, [session, pending_pairs], [session, message], **quiet).then(
            editor_choices, [classes, session, editing], [editing, features], **quiet
        ).then(**follow).then(**keep)

        generate_button.click(
            fill_with_llm, [session, classes], [session, message], api_visibility="private", show_progress_on=[message]
        ).then(editor_choices, [classes, session, editing], [editing, features], **quiet).then(**follow).then(**keep)

        def reset(classes_text):
            return reset_descriptors(classes_text), note("done", "Back to the shipped descriptors.")

        reset_button.click(reset, classes, [session, message], **quiet).then(
            editor_choices, [classes, session, editing], [editing, features], **quiet
        ).then(**follow).then(**keep)
        upload_button.upload(upload_descriptors, [upload_button, session, classes], [session, classes, message], **quiet).then(
            editor_choices, [classes, session, editing], [editing, features], **quiet
        ).then(**follow).then(**keep)

        def make_link(descriptors, classes_text, image_value):
            try:
                token = encode_state(classes_text, descriptors, image_value)
            except DescriptorError as error:
                return "", gr.update(visible=False), note("error", f"Could not make a link: {error}")
            kept = "the image" if example_name(image_value) else "not the image (only the examples travel in a link)"
            return token, gr.update(visible=True), note("done", f"Link copied: it holds the classes and their descriptors, {kept}.")

        link_button.click(make_link, [session, classes, image], [link_token, link_box, message], preprocess=False, **quiet).then(
            None, link_token, link_box, js=LINK_JS, **quiet
        )

        def restore(saved, request: gr.Request):
            """On opening the page: a shared link wins, then what this browser remembered, then the first example."""
            token = (request.query_params.get("s") if request is not None else None) or ""
            if token:
                try:
                    classes_text, descriptors, example = decode_state(token)
                    return (descriptors, classes_text, example or gr.skip(),
                            note("done", "Opened a shared explanation." + ("" if example else " Add an image to see it.")))  # fmt: skip
                except DescriptorError as error:
                    return shipped, first_classes_text, gr.skip(), note("error", f"Could not open the link: {error}. Showing the demo set instead.")
            if isinstance(saved, dict) and isinstance(saved.get("descriptors"), dict) and isinstance(saved.get("classes"), str):
                try:
                    descriptors = distinct_keys(parse_descriptors(saved["descriptors"], "the saved session"))
                    check_request_size(chosen_classes(saved["classes"], descriptors))
                    return descriptors, saved["classes"], gr.skip(), gr.skip()
                except DescriptorError:
                    pass  # a damaged memory is forgotten quietly: the demo set is shown
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()

        app.load(restore, [remembered], [session, classes, image, message], **quiet).then(
            editor_choices, [classes, session, editing], [editing, features], **quiet
        ).then(**follow)

        def classify(image: FileData, classes: str, descriptors: str = "", model: str = "") -> dict:
            """Classify an image by description and explain the choice.

            Parameters:
                image: the image to classify (JPEG, PNG, WebP, ...), e.g. handle_file("photo.jpg").
                classes: the candidate classes, comma-separated, e.g. "tree frog, tailed frog".
                descriptors: a JSON object {"class": ["feature", ...]} for the classes; "" uses the shipped demo set.
                model: one of the app's models; "" uses the first.
            Returns:
                The record of `python -m explain classify --json`: image (the uploaded file's name), model, predictions (classes with score, probability and descriptor scores, best first), baseline (the template alone), and contrast (top class against the runner-up).
            """
            return api_classify(models, image, classes, descriptors, model)

        def generate_descriptors(classes: str, token: str = "", request: gr.Request = None) -> dict:
            """Ask the app's LLM for the visual features of each class.

            Parameters:
                classes: the classes, comma-separated (at most 20 per request).
                token: the owner's token, when the app was started with DESCRY_LLM_TOKEN; otherwise "".
            Returns:
                {"descriptors": {"class": ["feature", ...]}, "failures": {"class": "why it failed"}}.
            """
            return api_generate(classes, gate=gate, session=session_of(request), token=token)

        def heatmap(image: FileData, classes: str, class_name: str, descriptor: str, descriptors: str = "", alone: bool = False, model: str = "") -> dict:
            """Where in the image one descriptor matches: its score at every patch (ClearCLIP maps).

            Parameters:
                image: the image (JPEG, PNG, WebP, ...), e.g. handle_file("photo.jpg").
                classes: the candidate classes, comma-separated.
                class_name: the class whose descriptor to map.
                descriptor: the descriptor, as written in the class's list.
                descriptors: a JSON object {"class": ["feature", ...]}; "" uses the shipped demo set.
                alone: true to map the descriptor without its class name in the prompt.
                model: one of the app's models; "" uses the first.
            Returns:
                {"grid": [[score, ...], ...] (rows top to bottom, in the same units as the descriptor's bar), "grid_size": [rows, columns], "prompt": the text encoded, "region": [left, top, right, bottom] of the image the grid covers, "input_size": null or the square size fed to the model}.
            """
            return api_heatmap(models, image, classes, class_name, descriptor, descriptors, alone, model)

        def differential(class_a: str, class_b: str, token: str = "", request: gr.Request = None) -> dict:
            """Ask the app's LLM what visual features tell one class from another, as pairs.

            Parameters:
                class_a: the first class, e.g. "tree frog".
                class_b: the class it is confused with, e.g. "tailed frog".
                token: the owner's token, when the app was started with DESCRY_LLM_TOKEN; otherwise "".
            Returns:
                {"pairs": [[feature of class_a, matching feature of class_b], ...], "cached": true when the answer came from the cache}.
            """
            return api_differential(class_a, class_b, gate=gate, session=session_of(request), token=token)

        gr.api(classify, api_name="classify")
        gr.api(heatmap, api_name="heatmap")
        gr.api(differential, api_name="differential")
        gr.api(generate_descriptors, api_name="generate_descriptors")
        describe_api(app, "classify", classify)
        describe_api(app, "heatmap", heatmap)
        describe_api(app, "differential", differential)
        describe_api(app, "generate_descriptors", generate_descriptors)
    # Several requests at once: a visitor with a small request is not stuck behind a heavy one.
    app.queue(default_concurrency_limit=CONCURRENT_REQUESTS)
    return app


def describe_api(app: gr.Blocks, api_name: str, fn) -> None:
    """Give an endpoint's parameters and return value the descriptions in `fn`'s docstring on the API page.

    `gr.api` builds its components from type hints alone and labels them by
    position ("the 1st Api component"); this names them and adds the text.
    """
    from gradio.utils import get_function_description

    _, parameters, returns = get_function_description(fn)
    block = next(f for f in app.fns.values() if f.api_name == api_name)
    names = [name for name in inspect.signature(fn).parameters if name != "request"]
    for component, name in zip(block.inputs, names):
        component.label = name
        component._api_info = {**component._api_info, "additional_description": parameters.get(name, "")}
    for component in block.outputs:
        component.label = "result"
        component._api_info = {**component._api_info, "description": " ".join(returns).strip()}


MAX_UPLOAD_BYTES = max(MAX_ZIP_BYTES, 20 * 2**20)  # per file: a dataset zip is the largest thing a visitor sends


def launch_options(port: int, share: bool = False) -> dict:
    """What `launch` needs: limits on uploads, and the data root among the paths files may be served from."""
    root = os.environ.get("DESCRY_DATA_ROOT")
    return {
        "server_port": port, "share": share, "css": CSS, "theme": gr.themes.Soft(),
        "max_file_size": MAX_UPLOAD_BYTES,
        "allowed_paths": [str(Path(root).resolve())] if root else [],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Descry web app")
    parser.add_argument("--model", action="append", metavar="MODEL", help="repeat to offer a model picker (default: $EXPLAIN_MODEL)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    args = parser.parse_args(argv)

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    models = Models(configured_models(args.model), args.device)
    load_error = models.load_error()  # load the first model now, so the first visitor does not wait
    if load_error:
        print(f"warning: {load_error}; the app starts anyway and says how to fix it", flush=True)
    app = build_app(models, load_error)
    app.launch(**launch_options(args.port, args.share), prevent_thread_lock=True)
    if args.share and not app.share_url:
        # Gradio explains why above; the app itself carries on locally.
        print(f"warning: no public link could be made from this network; the app keeps running at {app.local_url}", flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()
