"""Where a training step's time goes, diffkit against diffusers' ``UNet2DModel``: the limit of a 1.3x step.

``bench_train.py`` measures the speed ratio; this asks how far it can move. Each step (forward + backward
+ AdamW on fixed random inputs, the same ``Trainer`` as ``bench_train.py``) runs under ``torch.profiler``
and every aten operator's self time is put in one of five groups:

- ``convolution``: oneDNN convolutions, forward and backward;
- ``matmul_attention``: matrix products and the attention kernels (linear layers, QK^T, softmax(.)V);
- ``normalization``: GroupNorm / LayerNorm, forward and backward;
- ``optimizer``: what runs inside ``optimizer.step()`` (a ``record_function`` region);
- ``elementwise_other``: every other operator (SiLU, adds, copies, casts, the loss, reductions);
- ``untracked``: the step's wall time minus all operators' self time (Python and dispatch between ops).

The first two are dense maths: both networks have the same widths, blocks and attention levels, so they
call the same kernels on the same shapes, and nothing short of doing less arithmetic makes them faster.
The rest is memory-bound glue that fusion (a compiler, or hand-fused kernels) can shrink. From the
shares: the most diffkit could gain over diffusers if its glue cost nothing
(``diffusers step / diffkit dense``), and how much of diffkit's glue would have to go for a 1.3x step.

Contenders: ``diffkit+fused`` (as ``diffkit train`` runs it: fused AdamW) and ``diffusers`` (as its
example runs it). Rounds alternate the order; each round profiles ``--steps`` steps per contender after
warm-up; the report gives the median over rounds of each group's milliseconds per step. Profiling adds a
little per-op overhead, the same for both; the unprofiled ratio is ``bench_train.py``'s.

    .venv/bin/python -m benchmarks.bench_train_profile          # 32+64 px, fp32+bf16, 5 rounds x 10 steps
    .venv/bin/python -m benchmarks.bench_train_profile --quick  # smoke: 32 px fp32, 1 round x 2 steps

Needs diffusers (the ``bench`` extra). Results: ``reports/bench_train_profile.{html,json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from benchmarks.twins import PRECISIONS, SHIPPED, Trainer, build_trainer
from diffkit.models.config import preset_config
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report

GROUPS = ("convolution", "matmul_attention", "normalization", "optimizer", "elementwise_other", "untracked")
DENSE = ("convolution", "matmul_attention")
CONTENDERS = (SHIPPED, "diffusers")
GOAL = 1.3  # issue 14: diffkit at least 1.3x diffusers' images per second
OPTIMIZER_REGION = "bench::optimizer"
_MATMUL = ("addmm", "aten::mm", "bmm", "baddbmm", "matmul", "linear", "scaled_dot_product", "flash_attention",
           "softmax")  # fmt: skip
_NORM = ("group_norm", "layer_norm", "batch_norm")


def group_of(name: str) -> str:
    """The group of one aten operator (by name; the optimizer's ops are found by region instead)."""
    lowered = name.lower()
    if "conv" in lowered:
        return "convolution"
    if any(key in lowered for key in _MATMUL):
        return "matmul_attention"
    if any(key in lowered for key in _NORM):
        return "normalization"
    return "elementwise_other"


def profiled_step(trainer: Trainer) -> None:
    """``Trainer.step`` with the optimizer step marked, so its ops can be told apart."""
    import torch.nn.functional as F

    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=trainer.dtype or torch.bfloat16, enabled=trainer.dtype is not None):
        out = trainer.forward(trainer.x, trainer.t)
    F.mse_loss(out.float(), trainer.target).backward()
    with record_function(OPTIMIZER_REGION):
        trainer.optimizer.step()


def profile_steps(trainer: Trainer, steps: int) -> dict[str, float]:
    """Milliseconds per step in each group (operators' self CPU time; children are not double-counted)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            profiled_step(trainer)
        wall_ms = (time.perf_counter() - start) * 1e3
    events = prof.events()
    # Operators that ran inside the optimizer region: their ids, through each event's parent chain.
    totals = dict.fromkeys(GROUPS, 0.0)
    for event in events:
        if event.name == OPTIMIZER_REGION or event.device_type != torch.autograd.DeviceType.CPU:
            continue
        parent, in_optimizer = event.cpu_parent, False
        while parent is not None:
            if parent.name == OPTIMIZER_REGION:
                in_optimizer = True
                break
            parent = parent.cpu_parent
        group = "optimizer" if in_optimizer else group_of(event.name)
        totals[group] += event.self_cpu_time_total / 1e3
    # The region's own self time (Python around the kernels) belongs to the optimizer too.
    totals["optimizer"] += sum(e.self_cpu_time_total for e in events if e.name == OPTIMIZER_REGION) / 1e3
    totals["untracked"] = max(0.0, wall_ms - sum(totals.values()))
    return {group: value / steps for group, value in totals.items()}


def run_cell(preset: str, resolution: int, precision: str, batch: int, rounds: int, steps: int,
             warmup: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per contender: each group's median ms per step over rounds, plus the step total."""
    config = preset_config(preset, resolution)
    trainers = [build_trainer(kind, config, batch, PRECISIONS[precision]) for kind in CONTENDERS]
    for trainer in trainers:
        for _ in range(warmup):
            trainer.step(record=False)
    per_round: dict[str, list[dict[str, float]]] = {kind: [] for kind in CONTENDERS}
    for index in range(rounds):
        for trainer in trainers if index % 2 == 0 else trainers[::-1]:
            per_round[trainer.name].append(profile_steps(trainer, steps))
    result = {}
    for kind, rows in per_round.items():
        medians = {group: statistics.median(row[group] for row in rows) for group in GROUPS}
        totals = [sum(row.values()) for row in rows]
        medians["total"] = statistics.median(totals)
        # the spread over rounds of the whole step (each group's median is above)
        medians["total_min"], medians["total_max"] = min(totals), max(totals)
        result[kind] = {key: round(value, 2) for key, value in medians.items()}
    return result


def limits(cell: dict[str, dict[str, float]]) -> dict[str, float]:
    """What the shares allow: the ceiling with free glue, and the glue cut a 1.3x step needs."""
    ours, theirs = cell[SHIPPED], cell["diffusers"]
    dense = sum(ours[g] for g in DENSE)
    glue = ours["total"] - dense
    needed_total = theirs["total"] / GOAL
    cut = 1.0 - (needed_total - dense) / glue if glue > 0 else float("nan")
    return {
        "ratio_profiled": round(theirs["total"] / ours["total"], 3),
        "diffkit_dense_share": round(dense / ours["total"], 3),
        "diffusers_dense_share": round(sum(theirs[g] for g in DENSE) / theirs["total"], 3),
        "dense_ms_diffkit_over_diffusers": round(dense / sum(theirs[g] for g in DENSE), 3),
        "ceiling_if_glue_free": round(theirs["total"] / dense, 3),
        "glue_cut_needed_for_goal": round(cut, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke: 32 px fp32, 1 round x 2 steps")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per cell (order flips every round)")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps per contender and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--out", type=Path, default=Path("reports/bench_train_profile.html"))
    args = parser.parse_args()
    if args.quick:
        args.resolutions, args.precisions, args.rounds, args.steps, args.warmup = [32], ["fp32"], 1, 2, 1
    load_before = os.getloadavg()
    cells, rows, limit_rows = {}, [], []
    for resolution in args.resolutions:
        for precision in args.precisions:
            cell = run_cell(args.preset, resolution, precision, args.batch_size, args.rounds, args.steps,
                            args.warmup)  # fmt: skip
            name = f"{resolution}px_{precision}"
            cells[name] = cell | {"limits": limits(cell)}
            for kind in CONTENDERS:
                rows.append({"cell": name, "model": kind, **cell[kind]})
            limit_rows.append({"cell": name, **cells[name]["limits"]})
            print(name, cell, cells[name]["limits"], flush=True)
    load_after = os.getloadavg()
    summary = {
        "preset": args.preset, "batch_size": args.batch_size, "rounds": args.rounds, "steps": args.steps,
        "threads": torch.get_num_threads(), "goal": GOAL,
        "ceiling_if_glue_free_min": min(r["ceiling_if_glue_free"] for r in limit_rows),
        "ceiling_if_glue_free_max": max(r["ceiling_if_glue_free"] for r in limit_rows),
        "glue_cut_needed_min": min(r["glue_cut_needed_for_goal"] for r in limit_rows),
        "glue_cut_needed_max": max(r["glue_cut_needed_for_goal"] for r in limit_rows),
        "diffkit_dense_share_min": min(r["diffkit_dense_share"] for r in limit_rows),
        "diffkit_dense_share_max": max(r["diffkit_dense_share"] for r in limit_rows),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
    }  # fmt: skip
    sections = [
        Section(
            heading="Milliseconds per training step, by group (median over rounds, operators' self time)",
            table=rows,
            text=(
                "convolution and matmul_attention are dense maths on the same shapes in both networks;"
                " normalization, elementwise_other and optimizer are memory-bound glue. diffkit runs as"
                " shipped (fused AdamW), diffusers as its example (torch's default AdamW)."
            ),
        ),
        Section(
            heading=f"The limit: what the shares allow ({GOAL}x is issue 14's goal)",
            table=limit_rows,
            text=(
                "ceiling_if_glue_free = diffusers' step / diffkit's dense maths: the ratio if everything"
                " but convolutions and matrix products cost diffkit nothing. glue_cut_needed_for_goal ="
                f" the share of diffkit's glue that would have to disappear for a {GOAL}x step."
                " dense_ms_diffkit_over_diffusers near 1 shows the dense work is the same."
            ),
        ),
        Section(
            heading="Caveats",
            text=(
                f"One CPU, {summary['threads']} torch threads; load average {summary['load_before']} before,"
                f" {summary['load_after']} after. The profiler adds per-operator overhead (the same for"
                " both models); bench_train.py gives the unprofiled speed ratio."
            ),
        ),
    ]
    report = Report(
        title="Benchmark: where a training step's time goes, diffkit vs diffusers UNet2DModel",
        command="bench_train_profile",
        summary=summary,
        sections=sections,
        data={"summary": summary, "cells": cells},
    )
    paths = write_report(report, args.out)
    print(f"report: {paths.html}")


if __name__ == "__main__":
    main()
