"""The rehearsal's reading: the 30k-face pipeline end to end on this CPU (benchmarks/rehearsal.py).

Not a comparison with a peer: the README row names the reference project the GPU projection is set
beside, and the block gives each stage's costs and whether anything slowed down as it grew.
"""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table

REPORT = "rehearsal"
COMMAND = "python -m benchmarks.rehearsal --work DIR"
PEER = "none: the mission at its own size (GPU hours are a projection beside a reference project's)"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"{s['kept']:,} unique {s['image_px']} px faces scraped in {s['scrape_wall_s'] / 60:.0f} min; dedupe "
        f"of the scrape folder {s['dedupe_warm_s']:.1f} s (cold {s['dedupe_cold_s']:.0f} s, same clusters: "
        f"{'yes' if s['dedupe_same_clusters'] else 'NO'}); `{s['train_preset']}` at {s['train_px']} px for "
        f"{s['train_minutes_budget']:g} min of training with a kill -9 and resume: "
        f"{s['final_kimg']:.1f} kimg; "
        f"{s['sample_n']:,} samples in {s['sample_wall_s'] / 60:.1f} min; eval at N = {s['eval_n']:,} in "
        f"{s['eval_wall_s'] / 60:.1f} min"
    )


def block(report: dict[str, Any]) -> str:
    s, stages = report["summary"], report["data"]["stages"]
    setup = (
        f"{s['kept']:,} faces of {s['image_px']} px from the local site, then the whole pipeline, each stage "
        f"the diffkit command in its own process; report created {report['created']}, mean load shown per "
        f"stage ({s['cores']} cores)."
    )
    rows = [
        [
            name,
            f"{record['wall_s']:,.0f}",
            f"{record['cpu_s']:,.0f}",
            f"{record['peak_rss_mb']:,.0f}",
            f"{record['disk_mb']:,.0f}",
            f"{record['files']:,}",
        ]
        for name, record in stages.items()
    ]
    costs = table(["stage", "wall s", "CPU s", "peak RSS MB", "disk MB", "files"], rows)

    def ratio(key: str) -> str:
        value = s[key]
        return "not enough points" if value is None else f"{value:.2f}"

    growth = (
        f"Late over early rate (the last fifth of a stage's progress against its first): scrape "
        f"{ratio('scrape_rate_late_over_early')} per wall second and "
        f"{ratio('scrape_cpu_rate_late_over_early')} "
        f"per client CPU second; training {ratio('train_rate_late_over_early')}; sampling "
        f"{ratio('sample_rate_late_over_early')}. Scrape client CPU per kept image "
        f"{s['scrape_cpu_ms_per_kept']:.1f} ms; the data cache took {s['cache_build_s']:.0f} s; the kill "
        f"lost "
        f"{s['lost_to_kill_s']:.0f} s of training (the state is refreshed every 10 minutes)."
    )
    parts = [setup, costs, growth]
    if "scrape_earlier_cpu_ms_per_kept" in s:  # the same scrape measured before a fix (--earlier-scrape)
        parts.append(
            f"Before the inline near-duplicate check bounded its candidates (commit "
            f"{s['scrape_earlier_commit']}, mean load {s['scrape_earlier_mean_load1']:.1f}), the same scrape "
            f"took {s['scrape_earlier_cpu_ms_per_kept']:.1f} ms of client CPU per kept image, and its late "
            f"over early rate per client CPU second was {ratio('scrape_earlier_cpu_rate_late_over_early')}: "
            "the check's cost grew with the kept set."
        )
    return "\n\n".join(parts)
