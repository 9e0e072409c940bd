"""The whole page: its tabs, its API and its limits, composed from the rooms.

`TABS` is the table of the page's tabs: each is a module with a `TITLE`, an
`ID`, a `build(ctx)` that lays out its components and a `wire(ctx)` that
connects them. A new tab is one module and one row here. `build_app` makes the
shared context, builds every tab, then wires them (rooms may use each
other's components, so nothing is wired before everything is built), then
registers the API; `launch_options` is what `launch` needs.
"""

from __future__ import annotations

import gradio as gr

from descriptors.limits import RequestLimits
from explain import ExplainerPool
from web import api, evaluate_tab, explain_tab, sharing
from web.context import Context
from web.llm_gate import LLMFactory, LLMGate
from web.settings import Settings
from web.style import CSS

TABS = (explain_tab, evaluate_tab)
CONCURRENT_REQUESTS = 4  # light requests go through while a heavy one runs


def build_app(
    models: ExplainerPool,
    settings: Settings | None = None,
    load_error: str | None = None,
    llm: LLMFactory | None = None,
    gate: LLMGate | None = None,
    limits: RequestLimits | None = None,
) -> gr.Blocks:
    """The Gradio app over `models`; `settings` default to the environment's."""
    settings = settings or Settings.from_environment()
    ctx = Context(models, settings, gate or LLMGate.from_settings(settings), limits or RequestLimits(), load_error, llm)
    # Gradio keeps every upload and every output file in its cache: sweep files older than a day, hourly.
    with gr.Blocks(title="Descry: explainable classification by description", delete_cache=(3600, 86400)) as page:
        ctx.page = page
        gr.Markdown(
            "## Descry: why did the model choose that?\nCLIP scores each class's visual features against the image; "
            "the class with the best average wins, and the charts show which features decided it. "
            "Edit a class's features and the answer updates as you type."
        )
        sharing.build_state(ctx)
        with gr.Tabs() as ctx.ui.tabs:
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.ID):
                    tab.build(ctx)
        for tab in TABS:
            tab.wire(ctx)
        api.register(ctx)
    # Several requests at once: a visitor with a small request is not stuck behind a heavy one.
    page.queue(default_concurrency_limit=CONCURRENT_REQUESTS)
    return page


def launch_options(settings: Settings, port: int | None, share: bool = False) -> dict:
    """What `launch` needs: limits on uploads, and the folders files may be served from: the data root and the
    work folder (wherever it is), whose images the Evaluate tab shows and whose report it offers."""
    served = [settings.data_root, settings.work_dir]
    return {
        "server_port": port,
        "share": share,
        "css": CSS,
        "theme": gr.themes.Soft(),
        "max_file_size": settings.max_upload_bytes,
        "allowed_paths": [str(folder.resolve()) for folder in served if folder is not None],
    }
