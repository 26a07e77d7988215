"""bench_train's reading: training steps of diffkit's U-Net against diffusers' ``UNet2DModel`` twin."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table, x

REPORT = "train"
COMMAND = "python -m benchmarks.bench_train"
PEER = "diffusers `UNet2DModel`, matched size"


def headline(report: dict[str, Any]) -> str:
    ratios = report["data"]["ratios"]
    values = [row["speed_ratio_diffkit_over_diffusers"] for row in ratios]
    resolutions = "/".join(str(r) for r in sorted({row["resolution"] for row in ratios}))
    precisions = "/".join(sorted({row["precision"] for row in ratios}, key=lambda p: p != "fp32"))
    text = (
        f"`{report['summary']['preset']}` preset: training img/s ratio {min(values):.2f}-{max(values):.2f} "
        f"at {resolutions} px, {precisions} (eager, same AdamW)"
    )
    shipped = [row["shipped_ratio_over_diffusers"] for row in ratios if "shipped_ratio_over_diffusers" in row]
    both = [
        row["fused_ratio_over_fused_diffusers"] for row in ratios if "fused_ratio_over_fused_diffusers" in row
    ]
    if both:  # reports under the peer protocol: the flag on both sides, and what the flag alone gives
        cpu = [row["cpu_fused_ratio_median"] for row in ratios if "cpu_fused_ratio_median" in row]
        text += (
            f"; both with fused AdamW {min(both):.2f}-{max(both):.2f} ("
            + (f"{min(cpu):.2f}-{max(cpu):.2f} in CPU time; " if cpu else "")
            + f"the fused-AdamW flag on diffkit only: {min(shipped):.2f}-{max(shipped):.2f})"
        )
        slower = _slower_with_fused(ratios)
        text += (
            f"; {slower[0].lower()}{slower[1:]}"
            if slower
            else "; not slower than fused diffusers in any cell"
        )
    elif shipped:
        text += f"; as shipped (fused AdamW) vs its example {min(shipped):.2f}-{max(shipped):.2f}"
    compiled = [row for row in report["data"].get("levers", []) if row["contender"] == "diffkit+compile"]
    if compiled:
        text += "; compiled vs compiled " + "/".join(
            f"{row['vs diffusers+compile ratio_median']:.2f}" for row in compiled
        )
    efficiency = report["summary"].get("scaling_efficiency_2_ranks")
    if efficiency is not None:
        text += f"; 2 gloo ranks vs 1 (1 thread each): scaling efficiency {efficiency:.2f}"
    return text


def _levers(levers: list[dict[str, Any]]) -> str:
    return table(
        ["lever", "against", "resolution", "precision", "speed ratio (rounds)", "compile warm-up"],
        [
            [
                f"`{r['contender']}`",
                f"`{r['baseline']}`",
                f"{r['resolution']} px",
                r["precision"],
                f"{x(r['ratio_median'], 2)} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                f"{r['warmup_s']:g} s" if "compile" in r["contender"] else "",
            ]
            for r in levers
        ],
    )


def _scaling(scaling: list[dict[str, Any]]) -> str:
    return table(
        ["DDP on the CPU (gloo)", "img/s (rounds)", "scaling efficiency", "MFU"],
        [
            [
                r["cell"],
                f"{r['img_per_s']:.2f} ({r['img_per_s_min']:.2f}-{r['img_per_s_max']:.2f})",
                "" if r["scaling_efficiency"] is None else f"{r['scaling_efficiency']:.2f}",
                f"{r['mfu']:.0%}",
            ]
            for r in scaling
        ],
    )


def block(report: dict[str, Any]) -> str:
    s, data = report["summary"], report["data"]
    setup = (
        f"Setup: preset `{s['preset']}`, batch {s['batch_size']}, {s['timed_steps']} timed steps per cell, "
        f"torch threads: {s['torch_threads']}, {s['cpu_count']} CPUs, torch {s['torch']}; "
        f"matmul peaks measured in the run: {s['peak_fp32_gflops']:g} GFLOP/s fp32, "
        f"{s['peak_bf16_gflops']:g} GFLOP/s bf16; "
        f"1-minute load average {s['load_avg_1min_before']:g} before, {s['load_avg_1min_after']:g} after; "
        f"report created {report['created']}."
    )
    params = {(m["model"], m["resolution"]): m["params_m"] for m in data["measurements"]}
    if any("fused_ratio_over_fused_diffusers" in r for r in data["ratios"]):
        slower = _slower_with_fused(data["ratios"])
        verdict = (
            f"{slower}: both run the same optimizer there, so it is diffkit's network step that is slower."
            if slower
            else "diffkit is not slower than diffusers with the same fused AdamW in any cell."
        )
        return "\n\n".join([setup, _fused_table(data, params), verdict, *_extra_blocks(data)])
    rows = [
        [
            f"{r['resolution']} px",
            r["precision"],
            f"{r['diffkit_img_s']:.2f}",
            f"{r['diffusers_img_s']:.2f}",
            x(r["speed_ratio_diffkit_over_diffusers"], 2),
            x(r["shipped_ratio_over_diffusers"], 2) if "shipped_ratio_over_diffusers" in r else "",
            f"{r['diffkit_mfu']:.0%}",
            f"{r['diffusers_mfu']:.0%}",
            f"{params[('diffkit', r['resolution'])]:.1f} M / {params[('diffusers', r['resolution'])]:.1f} M",
        ]
        for r in data["ratios"]
    ]
    header = ["resolution", "precision", "diffkit img/s", "diffusers img/s", "speed ratio",
              "as shipped (fused AdamW)", "diffkit MFU", "diffusers MFU",
              "params (diffkit / diffusers)"]  # fmt: skip
    return "\n\n".join([setup, table(header, rows), *_extra_blocks(data)])


def _extra_blocks(data: dict[str, Any]) -> list[str]:
    blocks = []
    if data.get("levers"):
        blocks.append(_levers(data["levers"]))
    if data.get("scaling"):
        blocks.append(_scaling(data["scaling"]))
    return blocks


def _slower_with_fused(ratios: list[dict[str, Any]]) -> str:
    """A plain sentence naming the cells where diffkit is slower than diffusers, both with fused AdamW.

    With one torch thread the report also has the ratio in CPU time (the step's work, which a loaded
    machine does not inflate); where it has, that ratio decides, and the wall-time ratio is given beside it.
    """
    named = []
    for r in ratios:
        cpu = "cpu_fused_ratio_median" in r
        key = "cpu_fused_ratio" if cpu else "fused_ratio"
        median = r["cpu_fused_ratio_median" if cpu else "fused_ratio_over_fused_diffusers"]
        if median >= 1:
            continue
        text = (
            f"{r['resolution']} px {r['precision']} ({median:.2f}x, rounds {r[f'{key}_min']:.2f}-"
            f"{r[f'{key}_max']:.2f}"
        )
        if cpu:
            text += f", in CPU time; wall time {r['fused_ratio_over_fused_diffusers']:.2f}x"
        named.append(text + ")")
    if not named:
        return ""
    return f"Slower than diffusers with the same fused AdamW at {', '.join(named)}"


def _fused_table(data: dict[str, Any], params: dict[tuple[str, int], float]) -> str:
    """Reports under the peer protocol: the networks (same default AdamW), both with fused AdamW, and the
    fused-AdamW flag on diffkit only, labelled as the optimizer flag it is."""
    rows = [
        [
            f"{r['resolution']} px", r["precision"],
            f"{r['diffkit_img_s']:.2f}", f"{r['diffusers_img_s']:.2f}",
            x(r["speed_ratio_diffkit_over_diffusers"], 2), x(r["fused_ratio_over_fused_diffusers"], 2),
            x(r["shipped_ratio_over_diffusers"], 2), f"{r['diffkit_mfu']:.0%}", f"{r['diffusers_mfu']:.0%}",
            f"{params[('diffkit', r['resolution'])]:.2f} M / {params[('diffusers', r['resolution'])]:.2f} M",
        ]
        for r in data["ratios"]
    ]  # fmt: skip
    header = ["resolution", "precision", "diffkit img/s", "diffusers img/s", "speed ratio (same AdamW)",
              "both fused AdamW", "fused-AdamW flag on diffkit only", "diffkit MFU", "diffusers MFU",
              "params (diffkit / diffusers)"]  # fmt: skip
    if all("cpu_fused_ratio_median" in r for r in data["ratios"]):  # one thread: the ratios in CPU time too
        header += ["CPU time: same AdamW", "CPU time: both fused (rounds)"]
        for row, r in zip(rows, data["ratios"], strict=True):
            row += [x(r["cpu_ratio_median"], 2), f"{x(r['cpu_fused_ratio_median'], 2)} "
                    f"({r['cpu_fused_ratio_min']:.2f}-{r['cpu_fused_ratio_max']:.2f})"]  # fmt: skip
    return table(header, rows)
