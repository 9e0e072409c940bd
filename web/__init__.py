"""Descry's web app, built as rooms: one module per feature of the page, over the engine.

`page.build_app` composes the tabs of `page.TABS`; each tab lays out rooms,
and each room (`editor`, `heatmaps`, `tell_apart`, `compare`, `sharing`,
`evaluate_tab`, ...) builds its components and wires its events from one
`context.Context`: the model pool, the settings, the LLM gate and the
request limits. Handlers are plain functions of plain values that call
`explain` and `descriptors`; only the `build` and `wire` functions touch
Gradio's components and updates. Nothing in `explain` or `descriptors`
imports this package.
"""

from web.page import TABS, build_app, launch_options
from web.settings import Settings, SettingsError

__all__ = ["TABS", "Settings", "SettingsError", "build_app", "launch_options"]
