"""What the page says: messages, the headline, short model names, and errors for the API.

Handlers report through `note` (one message for the page's message area)
and the API through `api_errors` (Gradio's error, without markup). Every
piece of user text is escaped here before it reaches the page. Which
errors count as a visitor's mistake, shown as one line rather than a
failure of the app, is `USER_ERRORS`.
"""

from __future__ import annotations

import functools
import html
import os
import re
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from descriptors import DescriptorError
from explain import Classification, ExplainError
from explain.charts import class_colours, headline


class Refusal(Exception):
    """A request the app will not carry out (no LLM configured, the owner's limits); the message says why."""


USER_ERRORS = (DescriptorError, ExplainError, Refusal)


def note(kind: str, text: str) -> str:
    """A message for the message area: "error", "info" or "done"; `code` in backticks is shown as code.

    The message area floats at the bottom of the window, so a message is in view whatever was clicked; it
    stays until the visitor's next action, or until its close button is pressed.
    """
    if not text:
        return ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    role = ' role="alert"' if kind == "error" else ' role="status"'
    close = '<button class="descry-dismiss" type="button" aria-label="Close this message">×</button>'
    return f'<div class="descry-message descry-{kind}"{role}><span>{body}</span>{close}</div>'


# The message area's own script: the close button hides the message it sits in, and when Gradio itself shows
# a notice (a file of the wrong type dropped on the image, say), the last message steps aside for it, so
# that only one message speaks at a time.
DISMISS_JS = """
element.addEventListener('click', (event) => {
    const button = event.target.closest('.descry-dismiss');
    if (button) { button.closest('.descry-message').classList.add('descry-dismissed'); }
});
new MutationObserver((changes) => {
    if (changes.some((change) => [...change.addedNodes].some((node) => node.querySelector && (
            node.matches('.toast-item, .toast-body') || node.querySelector('.toast-item, .toast-body'))))) {
        element.querySelectorAll('.descry-message').forEach((shown) => shown.classList.add('descry-dismissed'));
    }
}).observe(document.body, {childList: true, subtree: true});
"""


def md(text: str) -> str:
    """User text made inert for Markdown: HTML escaped, Markdown punctuation backslashed."""
    return re.sub(r"([\\`*_{}\[\]()#+!|>~-])", r"\\\1", html.escape(text, quote=False))


def headline_html(
    result: Classification, details: str = "", warnings: list[str] | None = None, unsure: str | None = None
) -> str:
    """The answer in one line at the top of the results, coloured as in the charts, with the details below
    and any warnings about the descriptors in a callout that is hard to miss. When the call is below the
    app's threshold (`unsure` says why), no bold winner: "unsure between A and B" in the plain text colour."""
    colour = class_colours(result)[result.predictions[0].name]
    top, _, rest = headline(result, unsure=unsure is not None).partition(" · ")
    if unsure is not None:
        why = unsure.partition(": ")[2] or unsure
        parts = [f'<span class="descry-unsure" title="{html.escape(why)}">{html.escape(top)}</span>']
        details = f"{why}. {details}" if details else why
    else:
        parts = [f'<span class="descry-answer" style="color:{colour}">{html.escape(top)}</span>']
    if rest:
        parts.append(f'<span class="descry-versus">{html.escape(rest)}</span>')
    info = f'<div class="descry-details">{html.escape(details)}</div>' if details else ""
    warned = "".join(f'<div class="descry-warning">{html.escape(text)}</div>' for text in warnings or [])
    return f'<div class="descry-headline">{" · ".join(parts)}</div>{info}{warned}'


def setup_panel(error: str) -> str:
    """What the page shows in place of an explanation when the model cannot be loaded: why, and what to do."""
    steps = [
        "Point the app at a model saved on this machine: <code>python app.py --model DIR</code>, where DIR was "
        "saved with <code>save_pretrained</code> or holds <code>open_clip_config.json</code> and its weights.",
        "Or run it once where the model hub can be reached, so that the model is cached, then start it with "
        "<code>HF_HUB_OFFLINE=1</code> to use that cache without asking the hub.",
        "On a Hugging Face Space, set <code>EXPLAIN_MODEL</code> in the Space's variables to a model it can download.",
    ]
    items = "".join(f"<li>{step}</li>" for step in steps)
    return (
        '<div class="descry-setup" role="alert"><div class="descry-setup-title">The model could not be loaded, '
        f"so nothing can be explained yet.</div><div>{html.escape(error)}</div><ol>{items}</ol></div>"
    )


def short_name(model: str) -> str:
    """A model as tables and headings show it: the last part of its hub id or folder ("clip-vit-base-patch32")."""
    return Path(model.rstrip("/")).name or model


def api_errors(function: Callable) -> Callable:
    """An API endpoint whose visitor mistakes become Gradio errors of one line, without markup.

    The server's log gets that one line too, never a traceback (set $DESCRY_DEBUG for one): a visitor's
    mistake is no failure of the app. Anything else is a bug, and Gradio logs it in full.
    """

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as error:
            message = str(error).replace("`", "")
            print(f"refused {function.__name__.removeprefix('api_')}: {message}", flush=True)
            raise gr.Error(message, print_exception=bool(os.environ.get("DESCRY_DEBUG"))) from None

    return guarded
