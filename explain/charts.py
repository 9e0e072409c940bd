"""Plotly figures of a classification: the ranking, the descriptors, the contrast, pairs and models, plus a headline.

Each function takes the engine's plain records and returns a `Chart`: a
plotly figure as plain data (`figure()` gives plotly's own Figure), or, for
the headline, plain text; there is no scoring here and no UI.

Real CLIP descriptor scores sit around 20 to 30 logits, and what separates
two classes is often less than one. Bars drawn from zero would all look the
same length, so the descriptor, contrast and pairs charts draw each score
relative to a stated reference, the image's average descriptor score, and
say so in words; the absolute score is in the hover text, rounded. A class's
colour comes from its name (`class_colour`), so it is the same in every
chart, after every re-rank and under every model. Labels wrap to the width
the plot will have, and each row grows with its label's lines, so labels
never run into each other. User text (class names, descriptors) is
HTML-escaped before plotly sees it, because plotly renders a subset of HTML
in labels and hover text: markup typed into a descriptor must show as text,
never act as markup.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import textwrap
from collections.abc import Mapping, Sequence

from explain.results import Classification, ClassScore, Contrast

# Colours by class name: mid-tones after Okabe & Ito's and Tol's colour-blind palettes, each readable as text
# (at least 3:1) on a white page and on a dark one.
PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#999933",  # olive
    "#785EF0",  # violet
    "#A6761D",  # brown
    "#DC267F",  # magenta
)
MODEL_PALETTE = ("#1f77b4", "#e377c2", "#8c564b", "#17becf", "#bcbd22")
FONT = "Montserrat, ui-sans-serif, system-ui, sans-serif"  # the page's own font (Gradio's Soft theme)
CHAR_PX = 6.8  # the average width of a character of that font at 12 px
LINE_PX = 15  # one line of label text
ROW_PX = 24  # the least height of a bar's row
BAR_PX = 16  # the thickness of a bar
HEADER_PX = 42  # the heading row of each class's block in the descriptor chart (two lines)
BLOCK_GAP_PX = 10  # air between two classes' blocks
DEFAULT_WIDTH = 700  # the plot width assumed when the caller does not know it


def class_colour(name: str) -> str:
    """The colour of a class, from its name alone (case and underscores ignored)."""
    key = " ".join(name.replace("_", " ").casefold().split())
    return PALETTE[int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big") % len(PALETTE)]


def class_colours(result: Classification) -> dict[str, str]:
    """The colour of each class of a result."""
    return {entry.name: class_colour(entry.name) for entry in result.predictions}


def wrap_chars(width: int | None) -> int:
    """Characters per label line for a plot `width` pixels wide: labels take at most two fifths of it."""
    return int(max(14, min(52, 0.4 * (width or DEFAULT_WIDTH) / CHAR_PX)))


def safe(text: str, width: int | None = 24) -> str:
    """User text escaped for plotly, wrapped onto lines of about `width` characters."""
    if not width:
        return html.escape(text, quote=False)
    return "<br>".join(html.escape(line, quote=False) for line in _lines(text, width))


def _lines(text: str, width: int) -> list[str]:
    """`text` on lines of at most `width` characters; a newline in it always starts a new line."""
    lines = []
    for part in text.split("\n"):
        lines += textwrap.wrap(" ".join(part.split()), width=width, break_long_words=True) or [""]
    return lines


def reference_score(result: Classification) -> float:
    """What descriptor bars are drawn from: the average of every descriptor score of the image."""
    scores = [d.score for entry in result.predictions for d in entry.descriptors]
    return sum(scores) / len(scores) if scores else 0.0


def headline(result: Classification, unsure: bool = False) -> str:
    """One line saying what the model chose: "tree frog 89% · the template alone says tailed frog 68%"; when
    the call is too close to make (`unsure`), "unsure between tree frog and tailed frog · ..." instead."""
    top = result.predictions[0]
    line = f"{top.name} {_percent(top.probability)}"
    if unsure and len(result.predictions) > 1:
        line = f"unsure between {top.name} and {result.predictions[1].name}"
    if result.baseline:
        alone = result.baseline[0]
        if alone.name != top.name or unsure:  # an unsure line names no winner to agree with
            line += f" · the template alone says {alone.name} {_percent(alone.probability)}"
        else:
            line += f" · the template alone agrees ({_percent(alone.probability)})"
    return line


def shown_classes(result: Classification, top: int, include: str | None = None) -> list[ClassScore]:
    """The `top` best classes, and `include` after them when it is not among them (the class being edited)."""
    shown = list(result.predictions[:top])
    extra = next((entry for entry in result.predictions[top:] if entry.name == include), None)
    return [*shown, extra] if extra is not None else shown


class _Rows:
    """Rows laid out top to bottom in pixels, each as tall as its label's lines need; y counts up from 0."""

    def __init__(self, labels: Sequence[str], chars: int, least: int = ROW_PX, gaps: Sequence[int] = ()):
        self.wrapped = ["<br>".join(html.escape(line, quote=False) for line in _lines(text, chars)) for text in labels]
        heights = [max(least, LINE_PX * (text.count("<br>") + 1) + 8) for text in self.wrapped]
        gaps = list(gaps) or [0] * len(heights)  # extra space above each row
        self.height = sum(heights) + sum(gaps)
        self.centres, top = [], 0
        for height, gap in zip(heights, gaps, strict=True):
            top += gap
            self.centres.append(self.height - top - height / 2)
            top += height
        self.widest = max((len(line) for text in labels for line in _lines(text, chars)), default=0)


def ranking_figure(
    result: Classification, top: int = 15, include: str | None = None, width: int | None = None
) -> Chart:
    """Probability of each class by description (solid) beside the template alone (hatched); best on top.

    `include` adds the class being edited below the top ones when it is not among them. The axis ends a
    little past the largest probability shown, so that twenty classes of 5% each are not slivers.
    """
    shown = shown_classes(result, top, include)
    baseline = {entry.name: entry for entry in result.baseline}
    rank = {entry.name: k + 1 for k, entry in enumerate(result.predictions)}
    labels = [e.name if rank[e.name] <= top else f"#{rank[e.name]} {e.name}" for e in shown]
    rows = _Rows(labels, wrap_chars(width), least=28)
    figure = _figure()
    for name, value_of, offset, style in (
        ("by description", lambda e: e, 5, dict()),  # solid above hatched in each row
        ("template alone", lambda e: baseline[e.name], -5, dict(opacity=0.45, pattern=dict(shape="/", solidity=0.4))),
    ):
        figure.add_bar(
            y=[c + offset for c in rows.centres],
            x=[value_of(e).probability for e in shown],
            width=9,
            orientation="h",
            name=name,
            marker=dict(color=[class_colour(e.name) for e in shown], **style),
            customdata=[
                f"{html.escape(e.name)}: {_percent(value_of(e).probability)} {name}, score {value_of(e).score:.2f}"
                for e in shown
            ],
            hovertemplate="%{customdata}<extra></extra>",
        )
    largest = max([e.probability for e in shown] + [baseline[e.name].probability for e in shown] + [0.01])
    more = len(result.predictions) - len(shown)
    title = "Class ranking" + (f": top {min(top, len(shown))} of {len(result.predictions)}" if more > 0 else "")
    figure.update_layout(
        title=dict(text=title),
        xaxis=dict(
            title=dict(text="probability (solid: by description, hatched: the template alone)"),
            tickformat=".0%",
            range=[0, min(1.0, largest * 1.12)],
        ),
        yaxis=dict(tickvals=rows.centres, ticktext=rows.wrapped, range=[0, rows.height], showgrid=False),
        showlegend=False,
        height=rows.height + 130,
    )
    return _styled(figure, rows.widest, width)


def descriptor_figure(
    result: Classification, classes: int = 3, include: str | None = None, width: int | None = None
) -> Chart:
    """Each descriptor's score for the top classes, relative to the image's average descriptor score.

    Each class is a block of bars headed by its name, probability and mean (relative, like the bars) in its
    colour; the dashed line is the class's mean, its class score. `include` adds the class being edited as
    one more block when it is not among the top ones. The heading is the block's top row label, so it can
    never overlap a bar or be cut off, however narrow the screen. All blocks share one y axis, measured in
    pixels from the bottom, which the browser lays out far faster than one axis per block.
    """
    shown = shown_classes(result, classes, include)
    reference = reference_score(result)
    rank = {entry.name: k + 1 for k, entry in enumerate(result.predictions)}
    blocks = [_Rows([d.descriptor for d in entry.descriptors], wrap_chars(width)) for entry in shown]
    height = sum(HEADER_PX + rows.height for rows in blocks) + BLOCK_GAP_PX * (len(blocks) - 1)
    figure = _figure()
    values, ticks, top = [0.0], [], height
    for entry, rows in zip(shown, blocks, strict=True):
        base = top - HEADER_PX - rows.height  # the block's bars sit on this height; its heading above them
        ticks += _descriptor_block(figure, entry, rows, base, reference, editing=rank[entry.name] > classes)
        values += [d.score - reference for d in entry.descriptors] + [entry.score - reference]
        top = base - BLOCK_GAP_PX
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or 1.0)
    ticks.sort()
    figure.update_layout(
        xaxis=dict(
            title=dict(text=f"score − the image's average descriptor score ({reference:.2f}); dashed: class mean"),
            range=[low - pad, high + pad],
            zeroline=True,
            zerolinewidth=1,
        ),
        yaxis=dict(
            tickvals=[y for y, _ in ticks], ticktext=[text for _, text in ticks], range=[0, height], showgrid=False
        ),
        title=dict(text="Which descriptors drove the prediction"),
        height=height + 130,
    )
    return _styled(figure, max((rows.widest for rows in blocks), default=0), width)


def _descriptor_block(
    figure: Chart, entry: ClassScore, rows: _Rows, base: float, reference: float, editing: bool
) -> list[tuple[float, str]]:
    """Draw one class's bars, from height `base` up, and its dashed mean; returns its (height, label) ticks."""
    colour = class_colour(entry.name)
    centres = [base + centre for centre in rows.centres]
    figure.add_bar(
        y=centres,
        x=[d.score - reference for d in entry.descriptors],
        width=BAR_PX,
        orientation="h",
        showlegend=False,
        marker=dict(color=colour),
        customdata=[
            f"{html.escape(d.prompt)}<br>score {d.score:.2f}, {d.score - reference:+.2f} against the average"
            for d in entry.descriptors
        ],
        hovertemplate="%{customdata}<extra></extra>",
    )
    mean, line = entry.score - reference, dict(color=colour, dash="dash", width=1.5)
    figure.add_shape(type="line", xref="x", yref="y", x0=mean, x1=mean, y0=base, y1=base + rows.height, line=line)
    notes = (" · no descriptors: its template" if entry.fallback else "") + (" · the class you edit" if editing else "")
    heading = (
        f'<span style="color:{colour}"><b>{safe(entry.name, 40)}</b> · {_percent(entry.probability)}<br>'
        f"mean {mean:+.2f}{notes}</span>"
    )
    return [*zip(centres, rows.wrapped, strict=True), (base + rows.height + HEADER_PX / 2, heading)]


def pair_reference(contrast: Contrast) -> float:
    """What the contrast chart is drawn from: the average descriptor score of the two classes it compares.

    It depends on those two classes only, so editing a third class leaves the chart as it was.
    """
    scores = [d.score for side in (contrast.top, contrast.runner_up) for d in side.descriptors]
    return sum(scores) / len(scores) if scores else 0.0


def contrast_figure(contrast: Contrast, reference: float | None = None, width: int | None = None) -> Chart:
    """Top class against the runner-up, descriptor by descriptor, adding up to the margin.

    A class score is the mean of its descriptors, so descriptor d of a class
    with n descriptors adds (score(d) − reference) / n to (class score −
    reference). Each class's bars add up to its mean less the reference,
    drawn as the two "all descriptors" bars at the top; the margin is the
    difference between those two, since the reference cancels. The
    reference is the two classes' average descriptor score
    (`pair_reference`) unless another is given. Should the two classes'
    names give them one colour, the runner-up's bars are hatched.
    """
    reference = pair_reference(contrast) if reference is None else reference
    sides = (contrast.top, contrast.runner_up)
    same = class_colour(contrast.top.name) == class_colour(contrast.runner_up.name)
    labels = [f"{side.name}\nall descriptors" for side in sides]
    labels += [d.descriptor for side in sides for d in side.descriptors]
    gaps = (
        [0, 0, 14] + [0] * (len(contrast.top.descriptors) - 1) + [14] + [0] * (len(contrast.runner_up.descriptors) - 1)
    )
    rows = _Rows(labels, wrap_chars(width), gaps=gaps[: len(labels)])
    rows.wrapped[:2] = [f"<b>{text.rpartition('<br>')[0]}</b><br>all descriptors" for text in rows.wrapped[:2]]
    figure = _figure()
    values, position = [0.0], 2
    for side, hatched in ((contrast.top, False), (contrast.runner_up, same)):
        values += _contrast_shares(figure, side, reference, rows.centres[position:], hatched)
        position += len(side.descriptors)
    values += _contrast_sums(figure, sides, reference, rows.centres[:2], same)
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or 1.0)
    figure.update_layout(
        title=dict(
            text=(
                f"Why {safe(contrast.top.name, None)} and not {safe(contrast.runner_up.name, None)}: "
                f"a margin of {contrast.margin:.2f} in score"
            )
        ),
        xaxis=dict(
            title=dict(
                text=(
                    f"each descriptor's share: (its score − the two classes' average {reference:.2f}) ÷ its class's "
                    "number of descriptors; they add up to the class's bold bar"
                )
            ),
            range=[low - pad, high + pad],
            zeroline=True,
            zerolinewidth=1,
        ),
        yaxis=dict(tickvals=rows.centres, ticktext=rows.wrapped, range=[0, rows.height], showgrid=False),
        showlegend=False,  # every row names its class or descriptor
        height=rows.height + 150,
    )
    return _styled(figure, rows.widest, width)


def _contrast_shares(figure: Chart, side: ClassScore, reference: float, centres: list[float], hatched: bool):
    """One class's descriptors as their shares of its score; returns the shares."""
    n = max(len(side.descriptors), 1)
    shares = [(d.score - reference) / n for d in side.descriptors]
    figure.add_bar(
        y=centres[: len(shares)],
        x=shares,
        width=BAR_PX,
        orientation="h",
        marker=_marker(side.name, hatched),
        customdata=[
            f"{html.escape(d.prompt)}<br>score {d.score:.2f}; ({d.score:.2f} − {reference:.2f}) ÷ {n} = {s:+.3f}"
            for d, s in zip(side.descriptors, shares, strict=True)
        ],
        hovertemplate="%{customdata}<extra></extra>",
    )
    return shares


def _contrast_sums(figure: Chart, sides, reference: float, centres: list[float], same: bool) -> list[float]:
    """The two "all descriptors" bars on top; returns their lengths."""
    totals = [side.score - reference for side in sides]
    for side, total, centre, hatched in zip(sides, totals, centres, (False, same), strict=True):
        figure.add_bar(
            y=[centre],
            x=[total],
            width=BAR_PX,
            orientation="h",
            marker=_marker(side.name, hatched, outline=True),
            customdata=[f"{html.escape(side.name)}: mean {side.score:.2f}, {total:+.2f} against the average"],
            hovertemplate="%{customdata}<extra></extra>",
        )
    return totals


def pairs_figure(
    a: str, b: str, pairs: list[tuple[str, str, float, float]], reference: float, width: int | None = None
) -> Chart:
    """What tells A from B: each pair's feature of A and matching feature of B, scored on the image.

    `pairs` holds (feature of A, feature of B, score of A's prompt, score of B's prompt). Every bar has its
    own row, labelled with the feature it scores and its class, so no label can sit beside another's bar;
    a gap separates the pairs. Bars are drawn from the image's average descriptor score, as in the
    descriptor chart, in A's and B's colours (B's hatched should both names give one colour).
    """
    chars = wrap_chars(width)
    labels = [text for x, y, _, _ in pairs for text in (f"{a}: {x}", f"{b}: {y}")]
    rows = _Rows(labels, chars, gaps=[0 if i == 0 else (14 if i % 2 == 0 else 0) for i in range(len(labels))])
    same = class_colour(a) == class_colour(b)
    figure = _figure()
    for side, (name, hatched) in enumerate(((a, False), (b, same))):
        scores = [p[2 + side] for p in pairs]
        figure.add_bar(
            y=rows.centres[side::2],
            x=[score - reference for score in scores],
            width=BAR_PX,
            orientation="h",
            name=safe(name, None),
            marker=_marker(name, hatched),
            customdata=[
                f"{html.escape(name)}: {html.escape(pair[side])}<br>score {score:.2f}, "
                f"{score - reference:+.2f} against the average"
                for pair, score in zip(pairs, scores, strict=True)
            ],
            hovertemplate="%{customdata}<extra></extra>",
        )
    figure.update_layout(
        title=dict(text=f"What tells {safe(a, None)} from {safe(b, None)}"),
        xaxis=dict(title=dict(text=f"score − the image's average descriptor score ({reference:.2f})")),
        yaxis=dict(tickvals=rows.centres, ticktext=rows.wrapped, range=[0, rows.height], showgrid=False),
        showlegend=False,  # each row names its class
        height=rows.height + 130,
    )
    return _styled(figure, rows.widest, width)


def model_comparison_figure(
    results: Mapping[str, Classification],
    top: int = 10,
    labels: Mapping[str, str] | None = None,
    width: int | None = None,
) -> Chart:
    """The descriptors whose scores differ most between models, each model's bar in its row.

    Models differ in scale (their logit scales and biases), so each score is
    drawn relative to that model's own average descriptor score of the image;
    the spread between models is measured in those units. `labels` gives the
    models' names as the legend shows them (default: as given).
    """
    names = list(results)
    relative = {
        name: {(e.name, d.descriptor): d.score - reference_score(r) for e in r.predictions for d in e.descriptors}
        for name, r in results.items()
    }
    shared = [key for key in relative[names[0]] if all(key in relative[n] for n in names[1:])]
    spread = sorted(shared, key=lambda key: max(relative[n][key] for n in names) - min(relative[n][key] for n in names))
    shown = spread[::-1][:top]  # the largest difference on top
    rows = _Rows([f"{d} ({c})" for c, d in shown], wrap_chars(width), least=max(ROW_PX, 12 * len(names) + 6))
    figure = _figure()
    for k, name in enumerate(names):
        shown_name = html.escape((labels or {}).get(name, name))
        offset = (k - (len(names) - 1) / 2) * 11
        figure.add_bar(
            y=[c - offset for c in rows.centres],
            x=[relative[name][key] for key in shown],
            width=10,
            orientation="h",
            name=shown_name,
            marker=dict(color=MODEL_PALETTE[k % len(MODEL_PALETTE)]),
            customdata=[f"{shown_name}: {relative[name][key]:+.2f} against its average" for key in shown],
            hovertemplate="%{customdata}<extra></extra>",
        )
    figure.update_layout(
        title=dict(text="Descriptors the models disagree on most"),
        xaxis=dict(title=dict(text="score − the model's own average descriptor score of this image")),
        yaxis=dict(tickvals=rows.centres, ticktext=rows.wrapped, range=[0, rows.height], showgrid=False),
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"),
        height=rows.height + 170,
    )
    return _styled(figure, rows.widest, width)


def _marker(name: str, hatched: bool = False, outline: bool = False) -> dict:
    """A class's bars: its colour; hatched to tell it from another class of the same colour; the sums bold."""
    marker: dict = dict(color=class_colour(name))
    if hatched:
        marker["pattern"] = dict(shape="/", solidity=0.5, fgcolor="rgba(255,255,255,0.7)")
    if outline:
        marker["line"] = dict(color="rgba(0,0,0,0.55)", width=1.5)
    return marker


def _percent(probability: float) -> str:
    return f"{probability:.0%}" if 0.01 <= probability <= 0.99 else f"{probability:.1%}"


class Chart:
    """A plotly figure as plain data, in plotly's own figure format.

    Building a `plotly.graph_objects.Figure` checks every property as it is set, which cost more than the
    scoring itself on every keystroke; a chart is built here as dicts and lists instead. `to_json()` is what
    the page's plot receives (Gradio's `gr.Plot` calls it), and `figure()` gives plotly's checked Figure, for
    anything that wants one (the tests check every chart through it).
    """

    def __init__(self):
        self.data: list[dict] = []
        self.layout: dict = {"template": "none"}  # no template: plotly would copy one into every figure

    def add_bar(self, **properties) -> None:
        self.data.append({"type": "bar", **properties})

    def add_shape(self, **properties) -> None:
        self.layout.setdefault("shapes", []).append(properties)

    def update_layout(self, **properties) -> None:
        _merge(self.layout, properties)

    def axes(self, letter: str) -> list[dict]:
        """The layout of every x or y axis of the chart."""
        return [value for key, value in self.layout.items() if re.fullmatch(rf"{letter}axis\d*", key)]

    def to_dict(self) -> dict:
        return {"data": self.data, "layout": self.layout}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def figure(self):
        """plotly's Figure of the same chart, every property checked."""
        import plotly.graph_objects as go

        return go.Figure(self.to_dict())


def _merge(target: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _figure() -> Chart:
    return Chart()


def _styled(figure: Chart, widest_label: int, width: int | None) -> Chart:
    """Transparent backgrounds, the page's font, and margins worked out here rather than by plotly.

    The left margin fits the widest label line; the title and the axis title wrap to the plot's width, and
    the top and bottom margins grow with their lines. Margins that plotly works out itself (`automargin`)
    cost a second layout pass in the browser on every update.
    """
    plot_width = width or DEFAULT_WIDTH
    left = int(min(0.45 * plot_width, widest_label * CHAR_PX + 16))
    layout = figure.layout
    title = _wrapped(layout.get("title", {}).get("text", ""), int(plot_width / 8.6))  # 15-px title letters
    # The axis title is centred under the plotting area, which is what the margins leave of the width.
    x_title = layout.get("xaxis", {}).get("title", {}).get("text", "")
    axis_title = _wrapped(x_title, int((plot_width - left - 16) / CHAR_PX) - 2)
    top, bottom = 24 + 20 * (title.count("<br>") + 1), 44 + LINE_PX * (axis_title.count("<br>") + 1)
    figure.update_layout(
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        margin=dict(l=left, r=16, t=top, b=bottom),
        font=dict(family=FONT, size=12, color="#374151"),
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)),
        hoverlabel=dict(font=dict(family=FONT)),
        height=layout.get("height", 300) + top + bottom - 130,
        xaxis=dict(title=dict(text=axis_title, standoff=8)),
    )
    for axis in figure.axes("x"):
        _merge(axis, dict(gridcolor=GRID, zerolinecolor="rgba(128,128,128,0.55)", linecolor=LINE, showgrid=True))
    for axis in figure.axes("y"):
        _merge(axis, dict(gridcolor=GRID, zeroline=False))  # y is a row position: no line through a bar
    return figure


GRID, LINE = "rgba(128,128,128,0.22)", "rgba(128,128,128,0.4)"


def _wrapped(text: str, chars: int) -> str:
    """Chart text (already escaped, perhaps with its own line breaks) wrapped to lines of about `chars`."""
    chars = max(24, chars)  # words are never broken: an escaped "&lt;" must stay whole
    return "<br>".join(
        line for part in text.split("<br>") for line in textwrap.wrap(part, chars, break_long_words=False) or [""]
    )
