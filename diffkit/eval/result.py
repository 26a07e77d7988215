"""What ``diffkit eval`` returns: the metrics with their intervals, caveats, seeds and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown
from diffkit.metrics import caveats as cav
from diffkit.report.render import format_value


def _interval(bounds: list[float] | None, clipped: bool = False) -> str:
    """``[6,400.1 – 6,812.4]``: an en dash, since the numbers themselves carry commas.

    ``clipped``: the lower end was cut at the metric's lowest value (0), and says so.
    """
    if not bounds:
        return ""
    low = format_value(bounds[0]) + (" (clipped)" if clipped else "")
    return f"[{low} – {format_value(bounds[1])}]"


def _scores(values: dict[str, float]) -> str:
    return "  ".join(f"[bold]{name}[/] {format_value(value)}" for name, value in values.items())


@dataclass
class EvalResult(CommandResult):
    n_generated: int
    n_reference: int
    engine: str
    resize: str
    metrics: list[str]
    generated: str
    reference: str
    resolution: int
    features: str = "inception"  # the space of fid/kid/prc: "inception" or "dinov2" (IS: Inception)
    fid: float | None = None  # FID in Inception space, FD_DINOv2 in DINOv2 space (fid_label says which)
    fid_label: str | None = None
    fid_ci95: list[float] | None = None
    fid_ci95_clipped: bool = False  # the interval's lower end fell below 0 and was cut there
    fid_infinity: float | None = None
    fid_curve: dict[str, Any] | None = None
    fid_infinity_problems: list[str] = field(default_factory=list)  # why FID∞ cannot be trusted
    kid_mean: float | None = None
    kid_std: float | None = None
    kid_ci95: list[float] | None = None
    kid_subset_size: int | None = None
    kid_subsets: int | None = None
    is_mean: float | None = None
    is_std: float | None = None
    is_splits: int | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    prc_k: int | None = None
    prc_network: str | None = None
    prc_by_k: dict[str, dict[str, float]] | None = None  # "3", "5": the k sensitivity
    feature_space: dict[str, Any] | None = None  # extractor, resize, weights sha256 of the chosen space
    reference_stats: dict[str, Any] | None = None  # the statistics file used as the reference
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why it could not be computed
    stats_saved: str | None = None
    memorization: dict[str, Any] | None = None
    caveats: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    feature_cache: dict[str, str] = field(default_factory=dict)
    features_extracted: dict[str, int] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    samples_reused: bool | None = None
    report_html: str | None = None
    report_json: str | None = None

    def report_paths(self) -> list[Path]:
        return [Path(path) for path in (self.report_html, self.report_json) if path]

    def to_dict(self) -> dict[str, Any]:
        """Every field; metrics that were not asked for are left out rather than reported as null."""
        out: dict[str, Any] = {}
        skip = {
            "fid": (
                "fid",
                "fid_label",
                "fid_ci95",
                "fid_ci95_clipped",
                "fid_infinity",
                "fid_curve",
                "fid_infinity_problems",
            ),
            "kid": ("kid_mean", "kid_std", "kid_ci95", "kid_subset_size", "kid_subsets"),
            "is": ("is_mean", "is_std", "is_splits"),
            "prc": ("precision", "recall", "density", "coverage", "prc_k", "prc_network", "prc_by_k"),
            "memorization": ("memorization",),
        }
        hidden = {name for metric, names in skip.items() if metric not in self.metrics for name in names}
        for key, value in self.__dict__.items():
            if key not in hidden:
                out[key] = value
        out["weights_status"] = self.weights_status
        if self.fid is not None:
            out["fid_headline"] = self.fid_headline()
        return out

    @property
    def weights_status(self) -> str:
        """ "official weights" only when every network's weights are the pinned official files."""
        if not self.weights:
            return "no weights"
        return cav.weights_status(all(w.get("official", False) for w in self.weights.values()))

    def fid_headline(self) -> str:
        """FID and what it depends on: ``FID@100 31,727.1 (reference 300, torch-fidelity, official weights)``.

        Every place that shows an FID (summary, report, demo, index, run page) uses this line, so a
        number never travels without its N, its reference N, its engine and its weights' status.
        """
        n, m = self.n_generated, self.n_reference or None
        network = self.engine if self.features == "inception" else cav.SPACES[self.features].network
        return cav.fid_headline(n, m, self.fid, network, self.weights_status, self.features)

    def _engine_text(self) -> str:
        """The Inception engine, where Inception was used (IS, memorization or its own space)."""
        used = "inception" in self.weights or self.features == "inception"
        return f", engine {self.engine}" if used else ""

    @property
    def space(self) -> cav.Space:
        return cav.SPACES[self.features]

    def fid_infinity_text(self) -> str:
        if self.fid_infinity is None:
            return ""
        name = f"{self.space.fd}∞"
        if self.fid_infinity_problems:
            why = "; ".join(self.fid_infinity_problems)
            return f"{name} ≈ {format_value(self.fid_infinity)} (untrusted: {why})"
        return f"{name} ≈ {format_value(self.fid_infinity)} (estimate)"

    def _prc_lines(self) -> list[str]:
        lines = [
            f"{_scores(self.prc_by_k[str(self.prc_k)])} (k={self.prc_k}, {self.prc_network})"
            if self.prc_by_k
            else f"[bold]precision[/] {format_value(self.precision)}  [bold]recall[/] "
            f"{format_value(self.recall)} (k={self.prc_k})"
        ]
        for k, values in (self.prc_by_k or {}).items():
            if k != str(self.prc_k):
                lines.append(f"  at k={k}: {_scores(values)}")
        return lines

    def summary_lines(self) -> list[str]:
        reference = (
            f"[bold]{self.n_reference}[/] reference images" if self.n_reference else "reference statistics"
        )
        lines = [
            f"[bold]{self.n_generated}[/] generated vs {reference} ({self.resolution} px), "
            f"{self.space.network} features{self._engine_text()}, {self.weights_status}"
        ]
        if self.fid is not None:
            ci = f"  95% CI {_interval(self.fid_ci95, self.fid_ci95_clipped)}" if self.fid_ci95 else ""
            inf = f"  {self.fid_infinity_text()}" if self.fid_infinity is not None else ""
            lines.append(f"[bold]{shown(self.fid_headline())}[/]{ci}{inf}")
        if self.kid_mean is not None:
            ci = f"  95% CI {_interval(self.kid_ci95)}" if self.kid_ci95 else ""
            lines.append(
                f"[bold]{self.space.kd}@{self.n_generated}[/]: {format_value(self.kid_mean)} ± "
                f"{format_value(self.kid_std)}{ci}"
            )
        if self.is_mean is not None:
            lines.append(
                f"[bold]IS[/]: {format_value(self.is_mean)} ± {format_value(self.is_std)} "
                "(not meaningful for faces)"
            )
        if self.precision is not None:
            lines += self._prc_lines()
        if self.memorization is not None:
            lines.append(
                f"[bold]near-copies[/]: {self.memorization['n_flagged']} of {self.n_generated} "
                f"({100 * self.memorization['share_flagged']:.1f}%)"
            )
        if self.stats_saved:
            lines.append(f"reference statistics saved: {shown(self.stats_saved)}")
        # caveats and the report path carry user paths: escaped, so "[bold]" in a name stays text
        lines += [f"[yellow]caveat[/] {shown(note)}" for note in self.caveats]
        if self.report_html:
            lines.append(f"report: {shown(self.report_html)}")
        return lines
