"""The engine's exceptions, each carrying a one-line message fit to show a user.

The engine raises these; only the outer layers (CLI, app) turn them into
messages on stderr or in the page.
"""

from __future__ import annotations


class ExplainError(Exception):
    """Base class: something the user gave (image, model, classes) cannot be used."""


class ImageError(ExplainError, ValueError):
    """An image that is missing, unreadable, truncated or too large."""


class ModelLoadError(ExplainError, RuntimeError):
    """A model that cannot be loaded, or is not an image-text model."""


class HeatmapsUnavailable(ExplainError):
    """This model family has no justified per-patch heatmap; the message says why."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(error).strip() or error.__class__.__name__
    return text.splitlines()[0]
