"""Plotly figures of a classification: the ranking, the descriptors, and the contrast, plus a headline.

Each function takes the engine's plain records and returns a
`plotly.graph_objects.Figure` (or, for the headline, plain text); there is
no scoring here and no UI.

Real CLIP descriptor scores sit around 20 to 30 logits, and what separates
two classes is often less than one. Bars drawn from zero would all look the
same length, so the descriptor and contrast charts draw each score relative
to a stated reference, the mean of every descriptor score of the image, and
name that reference in the axis title; the absolute score is in the hover
text. Each class keeps one colour in every chart. User text (class names,
descriptors) is HTML-escaped before plotly sees it, because plotly renders
a subset of HTML in labels and hover text: markup typed into a descriptor
must show as text, never act as markup.
"""

from __future__ import annotations

import html
import textwrap

import plotly.graph_objects as go

from explain.results import Classification, ClassScore, Contrast

# One colour per class, by rank, in every chart (colour-blind-safe, after ColorBrewer's Dark2).
CLASS_COLOURS = ("#1b9e77", "#d95f02", "#7570b3")
OTHER_COLOUR = "#98a2ad"
FONT = "Montserrat, ui-sans-serif, system-ui, sans-serif"  # the page's own font (Gradio's Soft theme)
WRAP = 24  # characters per label line: keeps labels beside readable bars on a phone
ROW = 26  # pixels per bar
HEADER = 34  # pixels above each class's block in the descriptor chart, for its title


def safe(text: str, width: int | None = WRAP) -> str:
    """User text escaped for plotly, wrapped onto lines of about `width` characters."""
    if not width:
        return html.escape(text, quote=False)
    lines = textwrap.wrap(" ".join(text.split()), width=width, break_long_words=True) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def class_colours(result: Classification) -> dict[str, str]:
    """The colour of each class: the top three by rank, the rest grey."""
    return {
        entry.name: CLASS_COLOURS[k] if k < len(CLASS_COLOURS) else OTHER_COLOUR
        for k, entry in enumerate(result.predictions)
    }


def reference_score(result: Classification) -> float:
    """What descriptor bars are drawn from: the mean of every descriptor score of the image."""
    scores = [d.score for entry in result.predictions for d in entry.descriptors]
    return sum(scores) / len(scores) if scores else 0.0


def headline(result: Classification) -> str:
    """One line saying what the model chose: "tree frog 89% · the template alone says tailed frog 68%"."""
    top = result.predictions[0]
    line = f"{top.name} {_percent(top.probability)}"
    if result.baseline:
        alone = result.baseline[0]
        if alone.name != top.name:
            line += f" · the template alone says {alone.name} {_percent(alone.probability)}"
        else:
            line += f" · the template alone agrees ({_percent(alone.probability)})"
    return line


def ranking_figure(result: Classification, top: int = 15) -> go.Figure:
    """Probability of each class by description (solid) beside the template baseline (hatched); best on top."""
    shown = list(result.predictions[:top])[::-1]  # plotly draws the first bar at the bottom
    colours = class_colours(result)
    baseline = {entry.name: entry for entry in result.baseline}
    names = [safe(entry.name, 24) for entry in shown]
    rows = list(range(len(shown)))
    figure = _figure()
    figure.add_bar(
        y=rows,
        x=[entry.probability for entry in shown],
        orientation="h",
        name="by description",
        marker=dict(color=[colours[e.name] for e in shown]),
        customdata=[[n, e.score] for n, e in zip(names, shown, strict=True)],
        hovertemplate=(
            "%{customdata[0]}<br>probability %{x:.1%}<br>mean descriptor score %{customdata[1]:.2f}"
            "<extra>by description</extra>"
        ),
    )
    figure.add_bar(
        y=rows,
        x=[baseline[entry.name].probability for entry in shown],
        orientation="h",
        name="template alone",
        marker=dict(color=[colours[e.name] for e in shown], opacity=0.45, pattern=dict(shape="/", solidity=0.4)),
        customdata=[[n, baseline[e.name].score] for n, e in zip(names, shown, strict=True)],
        hovertemplate=(
            "%{customdata[0]}<br>probability %{x:.1%}<br>template score %{customdata[1]:.2f}"
            "<extra>template alone</extra>"
        ),
    )
    more = len(result.predictions) - len(shown)
    title = "Class ranking" + (f", top {len(shown)} of {len(result.predictions)}" if more > 0 else "")
    figure.update_layout(
        title=dict(text=title),
        barmode="group",
        bargap=0.25,
        xaxis=dict(
            title=dict(text="probability<br>solid: by description<br>hatched: template alone"),
            tickformat=".0%",
            range=[0, 1],
        ),
        yaxis=dict(tickvals=rows, ticktext=names, automargin=True),
        showlegend=False,
        height=max(220, 110 + 2 * ROW * len(shown)),
    )
    return _styled(figure)


def descriptor_figure(result: Classification, classes: int = 3) -> go.Figure:
    """Each descriptor's score for the top classes, relative to the image's mean descriptor score.

    Each class is a block of bars headed by its name, mean and probability
    in its colour; the dashed line is the class's mean, its class score. The
    heading is the block's top row label, so it can never overlap a bar or
    be cut off, however narrow the screen.
    """
    shown = result.predictions[:classes]
    colours = class_colours(result)
    reference = reference_score(result)
    counts = [max(len(entry.descriptors), 1) for entry in shown]
    plot_height = sum(HEADER + ROW * n for n in counts)
    figure = _figure()
    values = [0.0]
    top_px = 0
    layout: dict = {}
    for k, entry in enumerate(shown):
        block = HEADER + ROW * counts[k]
        domain = (1 - (top_px + block) / plot_height + 10 / plot_height, 1 - top_px / plot_height)  # 10 px of air
        layout[f"yaxis{k + 1 if k else ''}"] = _descriptor_block(
            figure, entry, k, reference, colours[entry.name], domain
        )
        values += [d.score - reference for d in entry.descriptors] + [entry.score - reference]
        top_px += block
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or 1.0)
    figure.update_layout(
        **layout,
        xaxis=dict(
            title=dict(
                text=f"{_less('score', reference)}<br>({reference:.2f}: the image's mean)<br>dashed: class mean"
            ),
            range=[low - pad, high + pad],
            zeroline=True,
            zerolinewidth=1,
            anchor="y" if len(shown) == 1 else f"y{len(shown)}",
        ),
        title=dict(text="Which descriptors drove the prediction"),
        height=plot_height + 160,
    )
    return _styled(figure)


def _descriptor_block(
    figure: go.Figure, entry: ClassScore, k: int, reference: float, colour: str, domain: tuple[float, float]
) -> dict:
    """Draw one class's bars and its dashed mean on the k-th y axis; returns that axis's layout."""
    axis = "y" if k == 0 else f"y{k + 1}"
    ordered = list(entry.descriptors)[::-1]  # plotly draws the first bar at the bottom
    positions = list(range(len(ordered)))
    figure.add_bar(
        y=positions,
        x=[d.score - reference for d in ordered],
        yaxis=axis,
        orientation="h",
        showlegend=False,
        marker_color=colour,
        customdata=[[safe(d.prompt, 60), d.score] for d in ordered],
        hovertemplate=(
            "%{customdata[0]}<br>score %{customdata[1]:.2f} (%{x:+.2f} against the reference)<extra></extra>"
        ),
    )
    mean = entry.score - reference
    line = dict(color=colour, dash="dash", width=1.5)
    figure.add_shape(type="line", xref="x", yref=axis, x0=mean, x1=mean, y0=-0.5, y1=len(ordered) - 0.5, line=line)
    note = " · template only" if entry.fallback else ""
    heading = (
        f'<span style="color:{colour}"><b>{safe(entry.name, WRAP)}</b><br>'
        f"mean {entry.score:.2f} · p {_percent(entry.probability)}{note}</span>"
    )
    return dict(
        domain=[max(domain[0], 0.0), domain[1]],
        tickvals=[*positions, len(ordered) + 0.25],  # the heading row sits above the block's bars
        ticktext=[*(safe(d.descriptor) for d in ordered), heading],
        automargin=True,
        range=[-0.6, len(ordered) + HEADER / ROW - 0.4],
        anchor="x",
        showgrid=False,
    )


def contrast_figure(contrast: Contrast, reference: float = 0.0) -> go.Figure:
    """Top class against the runner-up, descriptor by descriptor, adding up to the margin.

    A class score is the mean of its descriptors, so descriptor d of a class
    with n descriptors adds (score(d) − reference) / n to (class score −
    reference). Each class's bars add up to its mean less the reference,
    drawn as the two "all descriptors" bars at the top; the margin is the
    difference between those two, since the reference cancels.
    """
    figure = _figure()
    values = [0.0]
    labels: list[str] = []
    position = 0
    sides = ((contrast.runner_up, CLASS_COLOURS[1]), (contrast.top, CLASS_COLOURS[0]))
    # Bottom to top: the runner-up's descriptors, the top class's, then both sums; best descriptors uppermost.
    for side, colour in sides:
        entries = _relative_shares(side, reference)[::-1]
        shares = [share for _, share in entries]
        values += shares
        figure.add_bar(
            y=list(range(position, position + len(entries))),
            x=shares,
            orientation="h",
            marker_color=colour,
            name=f"{safe(side.name, None)}: mean {side.score:.2f}",
            customdata=[[safe(d.prompt, 60), d.score] for d, _ in entries],
            hovertemplate="%{customdata[0]}<br>score %{customdata[1]:.2f}, adds %{x:+.3f}<extra></extra>",
        )
        labels += [safe(d.descriptor) for d, _ in entries]
        position += len(entries)
    values += _contrast_sums(figure, sides, reference, position)
    labels += [f"<b>{safe(side.name)}</b><br>all descriptors" for side, _ in sides]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or 1.0)
    figure.update_layout(
        title=dict(
            text=(
                f"Why {safe(contrast.top.name, None)} and not {safe(contrast.runner_up.name, None)}: "
                f"margin {contrast.margin:+.2f}"
            )
        ),
        xaxis=dict(
            title=dict(text=f"({_less('score', reference)}) ÷ n<br>bars add up to the sums on top"),
            range=[low - pad, high + pad],
            zeroline=True,
            zerolinewidth=1,
        ),
        yaxis=dict(
            tickvals=[*range(position), position + 0.5, position + 1.5],
            ticktext=labels,
            automargin=True,
            range=[-0.6, position + 2.1],
        ),
        showlegend=False,  # the two sums at the top name the classes in their colours
        height=max(280, 170 + ROW * (len(labels) + 1)),
    )
    return _styled(figure)


def _contrast_sums(figure: go.Figure, sides, reference: float, position: int) -> list[float]:
    """The two "all descriptors" bars above the descriptors; returns their lengths."""
    totals = [side.score - reference for side, _ in sides]
    figure.add_bar(
        y=[position + 0.5, position + 1.5],
        x=totals,
        orientation="h",
        showlegend=False,
        marker=dict(color=[colour for _, colour in sides], pattern=dict(shape="x", solidity=0.25)),
        customdata=[[safe(side.name, None), side.score] for side, _ in sides],
        hovertemplate=(
            "%{customdata[0]}: mean %{customdata[1]:.2f}, %{x:+.2f} against the reference<extra>all descriptors</extra>"
        ),
    )
    return totals


def _relative_shares(entry: ClassScore, reference: float) -> list[tuple]:
    n = max(len(entry.descriptors), 1)
    return [(d, (d.score - reference) / n) for d in entry.descriptors]


def _less(what: str, reference: float) -> str:
    """ "score − 23.41", or "score + 12.78" for a negative reference."""
    return f"{what} − {reference:.2f}" if reference >= 0 else f"{what} + {-reference:.2f}"


def _percent(probability: float) -> str:
    return f"{probability:.0%}" if 0.01 <= probability <= 0.99 else f"{probability:.1%}"


def _figure() -> go.Figure:
    # No plotly template: applying one deep-copies it into every figure, which cost more than the
    # scoring itself on each keystroke. The few settings that matter are set in `_styled`.
    return go.Figure(layout=dict(template="none"))


def _styled(figure: go.Figure) -> go.Figure:
    # Transparent backgrounds and the page's font: the page's CSS gives text and grid lines their colours
    # in dark mode.
    grid = dict(
        gridcolor="rgba(128,128,128,0.22)", zerolinecolor="rgba(128,128,128,0.55)", linecolor="rgba(128,128,128,0.4)"
    )
    figure.update_layout(
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        margin=dict(l=8, r=16, t=56, b=64),
        font=dict(family=FONT, size=12, color="#374151"),
        title=dict(x=0, xanchor="left", font=dict(size=15)),
        hoverlabel=dict(font=dict(family=FONT)),
    )
    figure.update_xaxes(**grid, showgrid=True, automargin=True, title_standoff=10)  # axis titles clear the tick labels
    figure.update_yaxes(gridcolor=grid["gridcolor"], zeroline=False)  # y is a row index: no line through the bottom bar
    return figure


def model_comparison_figure(results: dict[str, Classification], top: int = 10) -> go.Figure:
    """The descriptors whose scores differ most between models, each model's bars side by side.

    Models differ in scale (their logit scales and biases), so each score is
    drawn relative to that model's own reference, the mean descriptor score
    of the image; the spread between models is measured in those units.
    """
    names = list(results)
    relative: dict[str, dict[tuple[str, str], float]] = {}
    for name, result in results.items():
        reference = reference_score(result)
        relative[name] = {
            (entry.name, d.descriptor): d.score - reference for entry in result.predictions for d in entry.descriptors
        }
    shared = [key for key in relative[names[0]] if all(key in relative[n] for n in names[1:])]
    spread = sorted(
        shared,
        key=lambda key: max(relative[n][key] for n in names) - min(relative[n][key] for n in names),
        reverse=True,
    )
    shown = spread[:top][::-1]  # the largest difference on top
    labels = [f"{safe(d)} <span style='opacity:0.7'>({safe(c, None)})</span>" for c, d in shown]
    figure = _figure()
    palette = ("#1f77b4", "#e377c2", "#8c564b", "#17becf", "#bcbd22")
    for k, name in enumerate(names):
        figure.add_bar(
            y=list(range(len(shown))),
            x=[relative[name][key] for key in shown],
            orientation="h",
            name=safe(name, None),
            marker_color=palette[k % len(palette)],
            hovertemplate=f"{safe(name, None)}<br>%{{x:+.2f}} against its image mean<extra></extra>",
        )
    figure.update_layout(
        title=dict(text="Descriptors the models disagree on most"),
        barmode="group",
        xaxis=dict(title=dict(text="score − the model's mean descriptor score of this image")),
        yaxis=dict(tickvals=list(range(len(shown))), ticktext=labels, automargin=True),
        legend=dict(orientation="h", x=0, y=-0.25, yanchor="top"),
        height=max(280, 170 + 18 * len(names) * len(shown)),
    )
    return _styled(figure)


def pairs_figure(a: str, b: str, pairs: list[tuple[str, str, float, float]], reference: float) -> go.Figure:
    """What tells A from B: each pair's A-side and B-side feature scored on the image, side by side.

    `pairs` holds (feature of A, feature of B, score of A's prompt, score of B's prompt); bars are drawn
    from the image's reference score, as in the descriptor chart, in A's and B's colours.
    """
    rows = list(range(len(pairs)))[::-1]  # the first pair on top
    labels = [f"{safe(x)}<br><span style='opacity:0.7'>vs {safe(y)}</span>" for x, y, _, _ in pairs]
    figure = _figure()
    for side, (name, colour, index) in enumerate(((a, CLASS_COLOURS[0], 2), (b, CLASS_COLOURS[1], 3))):
        figure.add_bar(
            y=rows,
            x=[p[index] - reference for p in pairs],
            orientation="h",
            name=safe(name, None),
            marker_color=colour,
            customdata=[[safe(p[side], 60), p[index]] for p in pairs],
            hovertemplate=f"{safe(name, None)}: %{{customdata[0]}}<br>score %{{customdata[1]:.2f}}<extra></extra>",
        )
    figure.update_layout(
        title=dict(text=f"What tells {safe(a, None)} from {safe(b, None)}"),
        barmode="group",
        xaxis=dict(title=dict(text=f"{_less('score', reference)}<br>({reference:.2f}: the image's mean)")),
        yaxis=dict(tickvals=rows, ticktext=labels, automargin=True),
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"),
        height=max(260, 170 + 2 * ROW * len(pairs)),
    )
    return _styled(figure)
