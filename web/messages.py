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
    """A message for the message area: "error", "info" or "done"; `code` in backticks is shown as code."""
    if not text:
        return ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="descry-message descry-{kind}"{role}>{body}</div>'


def md(text: str) -> str:
    """User text made inert for Markdown: HTML escaped, Markdown punctuation backslashed."""
    return re.sub(r"([\\`*_{}\[\]()#+!|>~-])", r"\\\1", html.escape(text, quote=False))


def headline_html(result: Classification, details: str = "") -> str:
    """The answer in one line at the top of the results, coloured as in the charts, with the details below."""
    colour = class_colours(result)[result.predictions[0].name]
    top, _, rest = headline(result).partition(" · ")
    parts = [f'<span class="descry-answer" style="color:{colour}">{html.escape(top)}</span>']
    if rest:
        parts.append(f'<span class="descry-versus">{html.escape(rest)}</span>')
    info = f'<div class="descry-details">{html.escape(details)}</div>' if details else ""
    return f'<div class="descry-headline">{" · ".join(parts)}</div>{info}'


def short_name(model: str) -> str:
    """A model as tables and headings show it: the last part of its hub id or folder ("clip-vit-base-patch32")."""
    return Path(model.rstrip("/")).name or model


def api_errors(function: Callable) -> Callable:
    """An API endpoint whose visitor mistakes become Gradio errors of one line, without markup."""

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except USER_ERRORS as error:
            raise gr.Error(str(error).replace("`", "")) from None

    return guarded
