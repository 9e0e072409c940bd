"""Room: the session's state, kept in the browser, and links that open the same explanation anywhere.

Each browser session's descriptor set lives in `gr.State` (server-side, per
session); what the visitor would lose on a reload is also kept in the
browser (`gr.BrowserState`) and comes back when the page is opened again.
"Copy link" packs the classes and their descriptors (and the image, when it
is one of the examples) into a compressed URL-safe token after `?s=`. A
link that is damaged, too long or holds something other than an
explanation is refused with a message, and the demo set is shown.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import zlib
from dataclasses import dataclass

import gradio as gr

from descriptors import DescriptorError, descriptors_of, parse_class_list, require_distinct
from descriptors.limits import RequestLimits
from descriptors.store import default_cache_dir, parse_descriptors, parse_json
from web.context import QUIET
from web.examples import EXAMPLE_CLASSES, FIRST_EXAMPLE, example_name, example_path
from web.messages import note
from web.settings import Settings
from web.uploads import file_path

MAX_LINK_CHARS = 6000  # what goes after "?s=": browsers and servers take URLs of 8 KB and more
MAX_STATE_BYTES = 256 * 1024  # what a link may decompress to

# After the server made the link's token, the browser turns it into a URL and tries to copy it.
LINK_JS = """
(token) => {
    if (!token) { return ""; }
    const url = window.location.origin + window.location.pathname + "?s=" + token;
    if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(() => {}); }
    return url;
}
"""


def encode_state(classes_text: str, descriptors: dict, image=None) -> str:
    """The classes, their descriptors and (for an example) the image, as a compact URL-safe string."""
    names = parse_class_list(classes_text or "")
    payload = {"v": 1, "c": classes_text or "", "d": {name: descriptors_of(descriptors, name) for name in names}}
    example = example_name(file_path(image))
    if example:
        payload["i"] = example
    packed = zlib.compress(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 9)
    token = base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")
    if len(token) > MAX_LINK_CHARS:
        raise DescriptorError(
            f"this set is too large for a link ({len(token):,} characters; the limit is {MAX_LINK_CHARS:,}); "
            "use Download JSON instead"
        )
    return token


def decode_state(token: str, limits: RequestLimits = RequestLimits()) -> tuple[str, dict, str | None]:
    """(classes text, descriptors, example image path or None) from a link, or DescriptorError saying why not."""
    if len(token) > MAX_LINK_CHARS:
        raise DescriptorError(f"the link's state is {len(token):,} characters long; the limit is {MAX_LINK_CHARS:,}")
    damaged = DescriptorError("the link's state is damaged (it is not what the Copy link button makes)")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise damaged  # not the URL-safe alphabet the button writes in
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        unpacker = zlib.decompressobj()
        text = unpacker.decompress(packed, MAX_STATE_BYTES)
    except (binascii.Error, ValueError, zlib.error):
        raise damaged from None
    if unpacker.unconsumed_tail:
        raise DescriptorError(f"the link's state unpacks to more than {MAX_STATE_BYTES // 1024} KB")
    if not unpacker.eof or unpacker.unused_data:
        raise damaged  # cut short, or with something after the end of the packed state
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError:
        raise damaged from None
    payload = parse_json(text, "the link's state")
    if not isinstance(payload, dict) or not isinstance(payload.get("c"), str) or not isinstance(payload.get("d"), dict):
        raise DescriptorError("the link's state is not a Descry explanation")
    descriptors = require_distinct(parse_descriptors(payload["d"], "the link's descriptors"))
    limits.check_names(descriptors)
    limits.check_state(descriptors, payload["c"])
    limits.choose(payload["c"], descriptors)
    return payload["c"], descriptors, example_path(payload.get("i"))


NOT_KEPT = "The classes and descriptors came back, but not the image: only the examples can be kept. Upload it again."


@dataclass
class Restored:
    """What the page opens with; None keeps what the page has. `image` "" clears the image."""

    descriptors: dict | None = None
    classes: str | None = None
    image: str | None = None
    message: str | None = None


def restore(token: str, saved, shipped: dict, limits: RequestLimits) -> Restored:
    """What the page opens with: a shared link wins, then what this browser remembered, then the first example.

    An example image comes back with its classes; an image that was the visitor's own cannot, so the page
    says so and shows no image rather than explaining the first example with somebody else's classes.
    """
    if token:
        try:
            classes_text, descriptors, example = decode_state(token, limits)
        except DescriptorError as error:
            message = f"Could not open the link: {error}. Showing the demo set instead."
            return Restored(shipped, EXAMPLE_CLASSES[FIRST_EXAMPLE.stem], None, note("error", message))
        if example:
            return Restored(descriptors, classes_text, example, note("done", "Opened a shared explanation."))
        opened = "Opened a shared explanation: its classes and descriptors. The link holds no image: upload one."
        return Restored(descriptors, classes_text, "", note("info", opened))
    if isinstance(saved, dict) and isinstance(saved.get("descriptors"), dict) and isinstance(saved.get("classes"), str):
        try:
            descriptors = require_distinct(parse_descriptors(saved["descriptors"], "the saved session"))
            limits.check_names(descriptors)
            limits.check_state(descriptors, saved["classes"])
            limits.choose(saved["classes"], descriptors)
        except DescriptorError:
            return Restored()  # a damaged memory is forgotten quietly: the demo set is shown
        example = example_path(saved.get("example"))
        if example:
            return Restored(descriptors, saved["classes"], example)
        return Restored(descriptors, saved["classes"], "", note("info", NOT_KEPT))
    return Restored()


def browser_secret(settings: Settings) -> str:
    """The key the browser's copy of a session is encrypted with, the same after a restart.

    From $DESCRY_STATE_SECRET, else made once and kept in the cache folder (readable by its owner only);
    where neither works, a new one per start, and the log says that kept work will not survive a restart.
    """
    if settings.state_secret:
        return settings.state_secret
    path = default_cache_dir() / "browser-state.key"
    try:
        return path.read_text(encoding="ascii").strip() or _new_secret(path)
    except FileNotFoundError:
        return _new_secret(path)
    except OSError as error:
        print(f"warning: cannot read {path} ({error.__class__.__name__}); kept work will not survive a restart")
        return secrets.token_urlsafe(32)


def _new_secret(path) -> str:
    secret = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secret)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()  # another process made it first
    except OSError as error:
        print(f"warning: cannot keep {path} ({error.__class__.__name__}); kept work will not survive a restart")
    return secret


def build_state(ctx) -> None:
    """The session's descriptor set (server-side) and what the browser remembers of it."""
    ctx.ui.descriptor_set = gr.State(ctx.shipped)
    ctx.ui.remembered = gr.BrowserState({}, storage_key="descry-session", secret=browser_secret(ctx.settings))


def build_button(ctx) -> None:
    ctx.ui.link_button = gr.Button("Copy link", size="sm")


def build_link_box(ctx) -> None:
    ctx.ui.link_token = gr.Textbox(visible=False)
    ctx.ui.link_box = gr.Textbox(
        label="Link to this explanation", visible=False, interactive=False, buttons=["copy"], elem_id="descry-link"
    )


def wire(ctx) -> None:
    ui = ctx.ui

    def make_link(descriptors, classes_text, image_value):
        try:
            token = encode_state(classes_text, descriptors, image_value)
        except DescriptorError as error:
            return "", gr.update(visible=False), note("error", f"Could not make a link: {error}")
        if example_name(file_path(image_value)):
            kept = "Link copied: it holds the classes, their descriptors and the image."
        else:
            kept = "Link copied: it holds the classes and their descriptors, but not the image (only examples travel)."
        return token, gr.update(visible=True), note("done", kept)

    made = ui.link_button.click(
        make_link,
        [ui.descriptor_set, ui.classes, ui.image],
        [ui.link_token, ui.link_box, ui.message],
        preprocess=False,
        **QUIET,
    )
    made.then(None, ui.link_token, ui.link_box, js=LINK_JS, **QUIET)

    def on_open(saved, request: gr.Request):
        token = (request.query_params.get("s") if request is not None else None) or ""
        restored = restore(token, saved, ctx.shipped, ctx.limits)
        image = gr.skip() if restored.image is None else (restored.image or None)
        keep = [gr.skip() if value is None else value for value in (restored.descriptors, restored.classes)]
        return *keep, image, gr.skip() if restored.message is None else restored.message

    opened = ctx.page.load(on_open, [ui.remembered], [ui.descriptor_set, ui.classes, ui.image, ui.message], **QUIET)
    ctx.after_change(opened, remember=False)
