"""Small matplotlib helpers shared by the reports. They build ``Figure`` objects directly (no pyplot),
so plotting works headless and from worker threads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    size: tuple[float, float] = (6.4, 3.4),
) -> Figure:
    figure = Figure(figsize=size)
    axes = figure.add_subplot()
    for label, (xs, ys) in series.items():
        axes.plot(list(xs), list(ys), label=label, linewidth=1.4)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if title:
        axes.set_title(title)
    if logy:
        axes.set_yscale("log")
    if len(series) > 1:
        axes.legend()
    axes.grid(alpha=0.3)
    return figure


def histogram(
    values: Sequence[float],
    bins: int | Sequence[float],
    xlabel: str,
    title: str = "",
    marker: float | None = None,
    marker_label: str = "",
    size: tuple[float, float] = (6.4, 3.4),
) -> Figure:
    """A histogram, optionally with a vertical marker (a threshold, a reference value)."""
    figure = Figure(figsize=size)
    axes = figure.add_subplot()
    axes.hist(list(values), bins=bins, color="#4b6fd6", edgecolor="white")
    if marker is not None:
        axes.axvline(marker, color="#d64b4b", linestyle="--", label=marker_label or None)
        if marker_label:
            axes.legend()
    axes.set_xlabel(xlabel)
    axes.set_ylabel("count")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    return figure


def bar_chart(counts: Mapping[str, float], ylabel: str, title: str = "") -> Figure:
    figure = Figure(figsize=(6.4, 3.4))
    axes = figure.add_subplot()
    labels = list(counts)
    axes.bar(labels, [counts[label] for label in labels], color="#4b6fd6")
    axes.set_ylabel(ylabel)
    axes.tick_params(axis="x", labelrotation=30)
    if title:
        axes.set_title(title)
    return figure
