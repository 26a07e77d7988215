"""bench_sample's reading: the samplers ranked by pixel error against a many-step DPM++ reference from the
same noise (trained tiny model), and against the exact answer of a known Gaussian; speed against DDPM-1000.
"""

from __future__ import annotations

from typing import Any

REPORT = "sample"
COMMAND = "python -m benchmarks.bench_sample"
PEER = "a many-step DPM-Solver++ reference from the same noise, and the exact answer of a known Gaussian"


def _steps(value: Any) -> str:
    """A step count, or what it means when no measured count was within the tolerance."""
    return "none of the counts measured" if value is None else f"{value}"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    model = (_steps(s["dpmpp_steps_within_tolerance"]), _steps(s["ddim_steps_within_tolerance"]))
    gaussian = (
        _steps(s["gaussian_dpmpp_steps_within_tolerance"]),
        _steps(s["gaussian_ddim_steps_within_tolerance"]),
        _steps(s["gaussian_ddpm_steps_w2_within_tolerance"]),
    )
    return (
        f"tiny model at {s['resolution']} px, {s['n_images']} images: median pixel RMSE within "
        f"{s['tolerance_levels']:g} 8-bit level of DPM++-{s['reference_steps']} from the same noise at "
        f"{model[0]} DPM++ steps and {model[1]} DDIM steps; known Gaussian, against the exact answer: "
        f"{gaussian[0]} and {gaussian[1]} steps, DDPM's output distribution (W2) at {gaussian[2]}; "
        f"{s['s_per_image_ddpm1000']:.2f} s vs {s['s_per_image_dpmpp20']:.2f} s per image (DDPM-1000 vs "
        "DPM++ 20, 4-image calls that include loading the snapshot)"
    )


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figures docs/sample.md quotes in prose: the committed run's size and what it showed."""
    s = report["summary"]
    return {
        "n_images": f"{s['n_images']}",
        "train_steps": f"{s['run_train_options']['steps']}",
        "timing_rounds": f"{s['timing_rounds']}",
        "reference_steps": f"{s['reference_steps']}",
        "tolerance": f"{s['tolerance_levels']:g}",
        "dpmpp_steps": _steps(s["dpmpp_steps_within_tolerance"]),
        "ddim_steps": _steps(s["ddim_steps_within_tolerance"]),
        "dpmpp20_rmse": f"{s['rmse_dpmpp20_levels']:.2f}",
        "ddim20_rmse": f"{s['rmse_ddim20_levels']:.2f}",
        "reference_check": f"{s['reference_check_dpmpp200_levels']:.3f}",
        "gaussian_dpmpp_steps": _steps(s["gaussian_dpmpp_steps_within_tolerance"]),
        "gaussian_ddim_steps": _steps(s["gaussian_ddim_steps_within_tolerance"]),
        "gaussian_ddpm_steps": _steps(s["gaussian_ddpm_steps_w2_within_tolerance"]),
        # the old measure (FD of pooled pixels against held-out faces), kept beside the ranking
        "steps_within_5pct": f"{max(s['ddim_steps_within_5pct'], s['dpmpp_steps_within_5pct'])}",
        "ddim20_over_ddpm1000": f"{s['fd_ddim20_over_ddpm1000']:.2f}",
        "dpmpp20_over_ddpm1000": f"{s['fd_dpmpp20_over_ddpm1000']:.2f}",
    }
