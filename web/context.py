"""What every part of the page is built from: one `Context` per app.

A room (a module of this package that builds one feature of the page) gets
the context and nothing else: the model pool, the settings, the LLM gate,
the request limits, and `ui`, the components other rooms made, by name.
Rooms never import each other; what they share goes through here. The
one chain every room runs after the descriptor set or the class list
changes is `after_change`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import gradio as gr

from descriptors.limits import RequestLimits
from explain import ExplainerPool
from web.examples import shipped_descriptors
from web.llm_gate import LLMFactory, LLMGate, app_llm
from web.settings import Settings

QUIET = dict(api_visibility="private", show_progress="hidden")  # a page event: no API name, no progress overlay


@dataclass
class Context:
    """The app's shared parts, and the page's shared components once they are built."""

    models: ExplainerPool
    settings: Settings
    gate: LLMGate
    limits: RequestLimits = field(default_factory=RequestLimits)
    load_error: str | None = None  # why the first model could not be loaded, shown on the page
    llm: LLMFactory | None = None  # the LLM for the buttons and the API; default: the environment's
    shipped: dict = field(default_factory=shipped_descriptors)  # the set a new session starts with
    page: gr.Blocks | None = None  # the page being built
    ui: SimpleNamespace = field(default_factory=SimpleNamespace)  # components by name, as rooms build them
    events: SimpleNamespace = field(default_factory=SimpleNamespace)  # shared event definitions, by name

    def __post_init__(self) -> None:
        if self.llm is None:
            self.llm = app_llm(self.settings)

    def after_change(self, trigger, fresh: bool = False, remember: bool = True):
        """The one chain after the descriptor set or the class list changed: the editor follows the class
        list, the image is scored again, and the session is remembered in the browser.

        `trigger` is the event that changed them (what `.click(...)` returned) or a listener to start from
        (`classes.submit`). With `fresh`, the scoring's message replaces the last one (a new action of the
        visitor); otherwise the message of the action that changed the set stays, unless scoring fails.
        """
        follows = self.events.editor_follows
        step = trigger.then(**follows) if hasattr(trigger, "then") else trigger(**follows)
        step = step.then(**(self.events.score_fresh if fresh else self.events.score_follow))
        return step.then(**self.events.remember) if remember else step
