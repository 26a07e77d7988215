"""bench_train_profile's reading: where a training step's time goes, diffkit as shipped against diffusers."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table, x

REPORT = "train_profile"
COMMAND = "python -m benchmarks.bench_train_profile"
PEER = "diffusers `UNet2DModel`, matched size"
_GROUPS = ("convolution", "matmul_attention", "normalization", "optimizer", "elementwise_other", "untracked")


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"`{s['preset']}` preset, batch {s['batch_size']}, as shipped vs its example, operators' self time: "
        f"convolutions and matrix products (the same kernels in both) are {s['diffkit_dense_share_min']:.0%}-"
        f"{s['diffkit_dense_share_max']:.0%} of diffkit's step; a {s['goal']}x step needs "
        f"{s['glue_cut_needed_min']:.0%}-{s['glue_cut_needed_max']:.0%} of the rest removed (ceiling with "
        f"the rest free: {s['ceiling_if_glue_free_min']:.2f}-{s['ceiling_if_glue_free_max']:.2f})"
    )


def block(report: dict[str, Any]) -> str:
    s, cells = report["summary"], report["data"]["cells"]
    setup = (
        f"Setup: preset `{s['preset']}`, batch {s['batch_size']}, {s['rounds']} rounds x {s['steps']} "
        f"profiled steps per model and cell, {s['threads']} torch threads; 1-minute load average "
        f"{s['load_before'][0]:.2f} before, {s['load_after'][0]:.2f} after; report created "
        f"{report['created']}."
    )
    rows = []
    for name, cell in cells.items():
        for model in ("diffkit+fused", "diffusers"):
            rows.append([name.replace("_", " "), f"`{model}`", *(f"{cell[model][g]:.1f}" for g in _GROUPS),
                         f"{cell[model]['total']:.1f} ({cell[model]['total_min']:.1f}-"
                         f"{cell[model]['total_max']:.1f})"])  # fmt: skip
    split = table(["cell", "model", *_GROUPS, "step ms (rounds)"], rows)
    limit_rows = [
        [
            name.replace("_", " "),
            x(c["limits"]["ratio_profiled"], 2),
            f"{c['limits']['diffkit_dense_share']:.0%}",
            f"{c['limits']['dense_ms_diffkit_over_diffusers']:.2f}",
            x(c["limits"]["ceiling_if_glue_free"], 2),
            f"{c['limits']['glue_cut_needed_for_goal']:.0%}",
        ]
        for name, c in cells.items()
    ]
    header = ["cell", "ratio (profiled)", "dense share of diffkit's step", "dense ms diffkit / diffusers",
              "ceiling if the rest were free", f"diffkit's rest to remove for {s['goal']}x"]  # fmt: skip
    return "\n\n".join([setup, split, table(header, limit_rows)])


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figure docs/benchmarks.md quotes in its prose: the speed goal the profile sizes."""
    return {"goal": f"{report['summary']['goal']:g}"}
