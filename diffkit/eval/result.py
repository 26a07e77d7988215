"""What ``diffkit eval`` returns: the metrics with their intervals, caveats, seeds and timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown


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
    fid: float | None = None
    fid_label: str | None = None
    fid_ci95: list[float] | None = None
    fid_infinity: float | None = None
    fid_curve: dict[str, Any] | None = None
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
    prc_k: int | None = None
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
            "fid": ("fid", "fid_label", "fid_ci95", "fid_infinity", "fid_curve"),
            "kid": ("kid_mean", "kid_std", "kid_ci95", "kid_subset_size", "kid_subsets"),
            "is": ("is_mean", "is_std", "is_splits"),
            "prc": ("precision", "recall", "prc_k"),
            "memorization": ("memorization",),
        }
        hidden = {name for metric, names in skip.items() if metric not in self.metrics for name in names}
        for key, value in self.__dict__.items():
            if key not in hidden:
                out[key] = value
        return out

    def summary_lines(self) -> list[str]:
        lines = [
            f"[bold]{self.n_generated}[/] generated vs [bold]{self.n_reference}[/] reference images "
            f"({self.resolution} px), engine {self.engine}"
        ]
        if self.fid is not None:
            ci = f"  95% CI [{self.fid_ci95[0]:.3f}, {self.fid_ci95[1]:.3f}]" if self.fid_ci95 else ""
            inf = f"  FID∞ ≈ {self.fid_infinity:.3f} (estimate)" if self.fid_infinity is not None else ""
            lines.append(f"[bold]{self.fid_label}[/]: {self.fid:.3f}{ci}{inf}")
        if self.kid_mean is not None:
            ci = f"  95% CI [{self.kid_ci95[0]:.5f}, {self.kid_ci95[1]:.5f}]" if self.kid_ci95 else ""
            lines.append(f"[bold]KID@{self.n_generated}[/]: {self.kid_mean:.5f} ± {self.kid_std:.5f}{ci}")
        if self.is_mean is not None:
            lines.append(f"[bold]IS[/]: {self.is_mean:.3f} ± {self.is_std:.3f} (not meaningful for faces)")
        if self.precision is not None:
            lines.append(
                f"[bold]precision[/] {self.precision:.3f}  [bold]recall[/] {self.recall:.3f} (k={self.prc_k})"
            )
        if self.memorization is not None:
            lines.append(
                f"[bold]near-copies[/]: {self.memorization['n_flagged']} of {self.n_generated} "
                f"({100 * self.memorization['share_flagged']:.1f}%)"
            )
        # caveats and the report path carry user paths: escaped, so "[bold]" in a name stays text
        lines += [f"[yellow]caveat[/] {shown(note)}" for note in self.caveats]
        if self.report_html:
            lines.append(f"report: {shown(self.report_html)}")
        return lines
