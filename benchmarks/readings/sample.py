"""bench_sample's reading: diffkit's samplers at few steps against DDPM with 1,000 steps."""

from __future__ import annotations

from typing import Any

REPORT = "sample"
COMMAND = "python -m benchmarks.bench_sample"
PEER = "DDPM with 1,000 steps (the reference sampler)"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"tiny model at {s['resolution']} px, {s['n_images']} images, FD in pooled pixel space: within 5% of "
        f"DDPM-1000 (or better) at {s['dpmpp_steps_within_5pct']} DPM++ steps and "
        f"{s['ddim_steps_within_5pct']} DDIM steps; {s['s_per_image_ddpm1000']:.2f} s vs "
        f"{s['s_per_image_dpmpp20']:.2f} s per image (DDPM-1000 vs DPM++ 20, 4-image calls that include "
        "loading the snapshot)"
    )


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figures docs/sample.md quotes in prose: the committed run's size and what it showed."""
    s = report["summary"]
    return {
        "n_images": f"{s['n_images']}",
        "train_steps": f"{s['run_train_options']['steps']}",
        "timing_rounds": f"{s['timing_rounds']}",
        "steps_within_5pct": f"{max(s['ddim_steps_within_5pct'], s['dpmpp_steps_within_5pct'])}",
        "ddim20_over_ddpm1000": f"{s['fd_ddim20_over_ddpm1000']:.2f}",
        "dpmpp20_over_ddpm1000": f"{s['fd_dpmpp20_over_ddpm1000']:.2f}",
    }
