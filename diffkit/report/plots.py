"""Small matplotlib helpers shared by the reports. They build ``Figure`` objects directly (no pyplot),
so plotting works headless and from worker threads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Wide and short: a plot spans its report card (drawn ~1,060 px wide, see render.PLOT_WIDTH_PX).
PLOT_SIZE = (10.0, 3.4)


def plain_number(value: float) -> str:
    """A tick label as a reader writes it: 0.26, 3, 1500 (never 2.6×10⁻¹ or 3e-01)."""
    return f"{value:.3g}" if 1e-4 <= abs(value) < 1e6 or value == 0 else f"{value:.2g}"


class _PlainLogFormatter(ticker.LogFormatter):
    """Matplotlib's choice of which log ticks get a label, written as plain numbers."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return plain_number(x)


def use_plain_log_ticks(axes: Axes) -> None:
    """Log y axis labelled 0.2, 0.3, 0.5 rather than in scientific notation (labels minor ticks too)."""
    axes.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    axes.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    size: tuple[float, float] = PLOT_SIZE,
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
        use_plain_log_ticks(axes)
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
    size: tuple[float, float] = PLOT_SIZE,
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
    figure = Figure(figsize=PLOT_SIZE)
    axes = figure.add_subplot()
    labels = list(counts)
    axes.bar(labels, [counts[label] for label in labels], color="#4b6fd6")
    axes.set_ylabel(ylabel)
    axes.tick_params(axis="x", labelrotation=30)
    if title:
        axes.set_title(title)
    return figure


def series(records: Sequence[Mapping[str, object]], key: str) -> tuple[list[float], list[float]]:
    """(kimg, value) of the stats.jsonl records that carry a number under ``key``."""
    points = [
        (float(r["kimg"]), float(r[key]))  # type: ignore[arg-type]
        for r in records
        if isinstance(r.get(key), (int, float)) and isinstance(r.get("kimg"), (int, float))
    ]
    return [p[0] for p in points], [p[1] for p in points]


def loss_plot(records: Sequence[Mapping[str, object]]) -> Figure | None:
    """The training loss over kimg (log y when it is positive), or None when the records hold none."""
    kimg, loss = series(records, "loss")
    if not loss:
        return None
    return line_plot({"loss": (kimg, loss)}, "kimg", "loss", logy=all(v > 0 for v in loss))


def metric_plot(records: Sequence[Mapping[str, object]], key: str, label: str, ylabel: str) -> Figure | None:
    """FID or KID during training, each evaluation a dot (a line alone hides a single point)."""
    kimg, values = series(records, key)
    if not values:
        return None
    figure = line_plot({label: (kimg, values)}, "kimg", ylabel)
    for line in figure.axes[0].lines:
        line.set_marker("o")
    return figure
