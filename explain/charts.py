"""Plotly figures of a classification: the ranking, the descriptors, and the contrast.

Each function takes the engine's plain records and returns a
`plotly.graph_objects.Figure`; there is no scoring here and no UI. User text
(class names, descriptors) is HTML-escaped before plotly sees it, because
plotly renders a subset of HTML in labels and hover text: markup typed into
a descriptor must show as text, never act as markup.
"""

from __future__ import annotations

import html
import textwrap

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explain.results import Classification, Contrast

DESCRIPTORS_COLOUR = "#2f6fb0"
BASELINE_COLOUR = "#b7c4d3"
TOP_COLOUR = "#2f8f5b"
RUNNER_UP_COLOUR = "#c0504d"
WRAP = 42  # characters per label line


def safe(text: str, width: int | None = WRAP) -> str:
    """User text escaped for plotly, wrapped onto lines of about `width` characters."""
    if not width:
        return html.escape(text, quote=False)
    lines = textwrap.wrap(" ".join(text.split()), width=width, break_long_words=True) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def ranking_figure(result: Classification, top: int = 15) -> go.Figure:
    """Probability of each class by description, beside the template baseline; best class on top."""
    shown = list(result.predictions[:top])[::-1]  # plotly draws the first bar at the bottom
    baseline = {entry.name: entry for entry in result.baseline}
    names = [safe(entry.name, 30) for entry in shown]
    rows = list(range(len(shown)))
    figure = go.Figure()
    figure.add_bar(
        y=rows, x=[entry.probability for entry in shown], orientation="h", name="by description",
        marker_color=DESCRIPTORS_COLOUR, customdata=[[n, e.score] for n, e in zip(names, shown)],
        hovertemplate="%{customdata[0]}<br>probability %{x:.1%}<br>mean score %{customdata[1]:.2f}<extra>by description</extra>",
    )  # fmt: skip
    figure.add_bar(
        y=rows, x=[baseline[entry.name].probability for entry in shown], orientation="h", name="template baseline",
        marker_color=BASELINE_COLOUR, customdata=[[n, baseline[e.name].score] for n, e in zip(names, shown)],
        hovertemplate="%{customdata[0]}<br>probability %{x:.1%}<br>score %{customdata[1]:.2f}<extra>template</extra>",
    )  # fmt: skip
    more = len(result.predictions) - len(shown)
    title = "Class ranking" + (f" (top {len(shown)} of {len(result.predictions)})" if more > 0 else "")
    figure.update_layout(
        title=title, barmode="group", xaxis=dict(title="probability", tickformat=".0%", range=[0, 1]),
        yaxis=dict(tickvals=rows, ticktext=names, automargin=True),
        legend=dict(orientation="h", y=-0.15), height=max(260, 70 + 42 * len(shown)),
    )  # fmt: skip
    return _styled(figure)


def descriptor_figure(result: Classification, classes: int = 3) -> go.Figure:
    """Each descriptor's score for the top classes: which features drove the prediction."""
    shown = result.predictions[:classes]
    heights = [max(len(entry.descriptors), 1) for entry in shown]
    figure = make_subplots(
        rows=len(shown), cols=1, shared_xaxes=True, vertical_spacing=0.12 / max(len(shown), 1),
        row_heights=heights, subplot_titles=[_class_title(entry) for entry in shown],
    )  # fmt: skip
    for row, entry in enumerate(shown, 1):
        ordered = list(entry.descriptors)[::-1]
        positions = list(range(len(ordered)))
        figure.add_bar(
            row=row, col=1, y=positions, x=[d.score for d in ordered], orientation="h", showlegend=False,
            marker_color=TOP_COLOUR if row == 1 else DESCRIPTORS_COLOUR,
            customdata=[[safe(d.prompt, 60)] for d in ordered],
            hovertemplate="%{customdata[0]}<br>score %{x:.2f}<extra></extra>",
        )  # fmt: skip
        figure.add_vline(x=entry.score, row=row, col=1, line_dash="dash", line_color="#555", line_width=1)
        figure.update_yaxes(row=row, col=1, tickvals=positions, ticktext=[safe(d.descriptor) for d in ordered], automargin=True)
    figure.update_xaxes(title_text="descriptor score (dashed: class mean)", row=len(shown), col=1)
    figure.update_layout(title="Which descriptors drove the prediction", height=max(300, 110 + 34 * sum(heights)))
    return _styled(figure)


def contrast_figure(contrast: Contrast) -> go.Figure:
    """Top class against the runner-up: each descriptor's share of its class score, and the margin.

    A class score is the mean of its descriptors, so each bar is score / n and
    each class's bars add up to its score; the margin is the difference of the sums.
    """
    top = Contrast.contributions(contrast.top)[::-1]
    runner_up = Contrast.contributions(contrast.runner_up)[::-1]
    figure = go.Figure()
    # The runner-up's bars sit below the top class's; each side keeps its best descriptor uppermost.
    for side, entries, colour, offset in (
        (contrast.runner_up, runner_up, RUNNER_UP_COLOUR, 0),
        (contrast.top, top, TOP_COLOUR, len(runner_up)),
    ):
        figure.add_bar(
            y=[offset + i for i in range(len(entries))], x=[share for _, share in entries], orientation="h",
            marker_color=colour, name=f"{safe(side.name, None)} (sum {side.score:.2f})",
            customdata=[[safe(d.prompt, 60), d.score] for d, _ in entries],
            hovertemplate="%{customdata[0]}<br>score %{customdata[1]:.2f}, adds %{x:.2f} to its class<extra></extra>",
        )  # fmt: skip
    labels = [safe(d.descriptor) for d, _ in runner_up] + [safe(d.descriptor) for d, _ in top]
    figure.add_vline(x=0, line_color="#444", line_width=1)
    figure.update_layout(
        title=(
            f"{safe(contrast.top.name, None)} vs {safe(contrast.runner_up.name, None)}: "
            f"margin {contrast.top.score:.2f} − {_bracketed(contrast.runner_up.score)} = {contrast.margin:+.2f}"
        ),
        xaxis=dict(title="share of class score (descriptor score ÷ number of descriptors)"),
        yaxis=dict(tickvals=list(range(len(labels))), ticktext=labels, automargin=True),
        legend=dict(orientation="h", y=-0.2, traceorder="reversed"), height=max(280, 120 + 30 * len(labels)),
    )  # fmt: skip
    return _styled(figure)


def _bracketed(value: float) -> str:
    return f"({value:.2f})" if value < 0 else f"{value:.2f}"


def _class_title(entry) -> str:
    suffix = " (no descriptors: template)" if entry.fallback else ""
    return f"{safe(entry.name, None)}: mean {entry.score:.2f}, p = {entry.probability:.1%}{suffix}"


def _styled(figure: go.Figure) -> go.Figure:
    figure.update_layout(template="plotly_white", margin=dict(l=10, r=20, t=60, b=40), font=dict(size=12))
    return figure
