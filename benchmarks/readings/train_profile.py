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
    # a negative cut: that cell's profiled step is already past the goal (noise can do it on a loaded machine)
    low = f"{s['glue_cut_needed_min']:.0%}" if s["glue_cut_needed_min"] >= 0 else "none"
    text = (
        f"`{s['preset']}` preset, batch {s['batch_size']}, as shipped vs its example, operators' self time: "
        f"convolutions and matrix products (the same kernels in both) are {s['diffkit_dense_share_min']:.0%}-"
        f"{s['diffkit_dense_share_max']:.0%} of diffkit's step; a {s['goal']}x step needs "
        f"{low} to {s['glue_cut_needed_max']:.0%} of the rest removed (ceiling with "
        f"the rest free: {s['ceiling_if_glue_free_min']:.2f}-{s['ceiling_if_glue_free_max']:.2f})"
    )
    if "conv_cpu_ratio_1thread_min" in s:  # reports with the convolution audit (issue 28.3)
        same = (
            "the same convolution calls and shapes" if s["conv_same_shapes_all_cells"] else "different calls"
        )
        text += (
            f"; {same} in both, convolutions' CPU time with one thread {s['conv_cpu_ratio_1thread_min']:.2f}-"
            f"{s['conv_cpu_ratio_1thread_max']:.2f}x diffusers'"
        )
    return text


def block(report: dict[str, Any]) -> str:
    s, cells = report["summary"], report["data"]["cells"]
    setup = (
        f"Setup: preset `{s['preset']}`, batch {s['batch_size']}, {s['rounds']} rounds x {s['steps']} "
        f"profiled steps per model and cell, torch threads: {s['threads']}; 1-minute load average "
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
            f"{c['limits']['glue_cut_needed_for_goal']:.0%}"
            if c["limits"]["glue_cut_needed_for_goal"] >= 0
            else "none (already past)",
        ]
        for name, c in cells.items()
    ]
    header = ["cell", "ratio (profiled)", "dense share of diffkit's step", "dense ms diffkit / diffusers",
              "ceiling if the rest were free", f"diffkit's rest to remove for {s['goal']}x"]  # fmt: skip
    blocks = [setup, split, table(header, limit_rows)]
    if all("conv_audit" in cell for cell in cells.values()):
        blocks += _conv_audit(cells)
    return "\n\n".join(blocks)


def _conv_audit(cells: dict[str, Any]) -> list[str]:
    """The convolution audit (issue 28.3): the calls compared, and their cost measured two ways."""
    rows, ratios = [], []
    for name, cell in cells.items():
        audit = cell["conv_audit"]
        for model in (m for m in audit if isinstance(audit[m], dict)):
            a = audit[model]
            same = audit["same_shapes"] if model in ("diffkit+fused", "diffusers") else audit[
                "layout_variant_same_shapes"]  # fmt: skip
            rows.append([
                name.replace("_", " "), f"`{model}`", "yes" if same else "no",
                f"{a['weight_casts']}", f"{a['forward_inputs_channels_last']}",
                f"{a['backward_grads_strided']}",
                f"{a['cpu_ms_1thread']:.1f}", f"{a['step_cpu_ms_1thread']:.1f}",
                f"{a['cpu_ms_all_threads']:.1f}" if "cpu_ms_all_threads" in a else "",
            ])  # fmt: skip
        ours, theirs = cell["diffkit+fused"], cell["diffusers"]
        ratios.append([
            name.replace("_", " "),
            f"{ours['convolution'] / theirs['convolution']:.2f} "
            f"({min(cell['convolution_ratio_rounds']):.2f}-{max(cell['convolution_ratio_rounds']):.2f})",
            f"{audit['cpu_ratio_1thread_median']:.2f} ({audit['cpu_ratio_1thread_min']:.2f}-"
            f"{audit['cpu_ratio_1thread_max']:.2f})",
            f"{audit['layout_variant_conv_cpu_over_shipped']:.2f}",
            f"{audit['layout_variant_step_cpu_over_shipped']:.2f}",
        ])  # fmt: skip
    header = ["cell", "model", "same conv shapes as diffkit", "weight casts per step",
              "conv inputs channels_last", "strided incoming grads", "conv CPU ms, 1 thread",
              "step CPU ms, 1 thread", "conv CPU ms, the run's threads"]  # fmt: skip
    if not any(row[-1] for row in rows):  # a one-thread run: no second measurement
        header, rows = header[:-1], [row[:-1] for row in rows]
    calls = table(header, rows)
    cost = table(["cell", "conv wall ms diffkit / diffusers (rounds)", "conv CPU, 1 thread (rounds)",
                  "diffusers' layout on diffkit: conv CPU", "... step CPU"], ratios)  # fmt: skip
    return [calls, cost]


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figure docs/benchmarks.md quotes in its prose: the speed goal the profile sizes."""
    return {"goal": f"{report['summary']['goal']:g}"}
