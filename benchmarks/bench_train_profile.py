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

A convolution audit per cell checks the claim that the dense maths are the same (issue 28.3: at 32 px
bf16 one run gave diffkit's convolutions 1.15x diffusers' time). It records every convolution call of one
step (forward and backward: shapes, strides, padding, dtype, which gradients) in both networks and the
autocast weight casts, and counts what differs: the shapes must match call for call; the memory layout of
inputs and incoming gradients may not. It then times the convolutions in thread CPU time with one torch
thread, in alternating rounds. On a shared machine the two-thread wall time of a convolution includes the
time one thread spins in oneDNN's barriers while the other is descheduled (its backward-weights kernels
reduce across threads); one thread's CPU time counts only the work, so it separates a real kernel
difference from load.

    .venv/bin/python -m benchmarks.bench_train_profile          # 32+64 px, fp32+bf16, 5 rounds x 10 steps
    .venv/bin/python -m benchmarks.bench_train_profile --quick  # smoke: 32 px fp32, 1 round x 2 steps
    .venv/bin/python -m benchmarks.bench_train_profile --threads 1 --rounds 3 --steps 5  # a loaded machine

Needs diffusers (the ``bench`` extra). Results: ``reports/bench_train_profile.{html,json}``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.twins import PRECISIONS, SHIPPED, Trainer, build_trainer
from diffkit.models.blocks import AttentionBlock
from diffkit.models.config import UNetConfig, preset_config
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
        convs = [row["convolution"] for row in rows]
        medians["convolution_min"], medians["convolution_max"] = min(convs), max(convs)
        result[kind] = {key: round(value, 2) for key, value in medians.items()}
    ours_rows, theirs_rows = (per_round[kind] for kind in CONTENDERS)
    conv_ratios = [a["convolution"] / b["convolution"] for a, b in zip(ours_rows, theirs_rows, strict=True)]
    result["convolution_ratio_rounds"] = [round(r, 3) for r in conv_ratios]  # type: ignore[assignment]
    return result


def _layout(tensor: torch.Tensor) -> str:
    if tensor.is_contiguous():
        return "contiguous"
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "strided"


class ConvAudit(TorchDispatchMode):
    """Every convolution call (its signature and, when ``timed``, its thread CPU time) and the weight casts.

    A dispatch mode sees the aten calls after autocast, so it sees the bf16 convolutions and the casts.
    """

    def __init__(self, timed: bool = False, clock: Callable[[], int] = time.thread_time_ns) -> None:
        super().__init__()
        self.timed, self.clock = timed, clock
        self.signatures: list[tuple] = []
        self.layouts: list[tuple[str, str, str]] = []  # (op, input layout, grad_output layout or "")
        self.weight_casts = 0
        self.cpu_ns = {"forward": 0, "backward": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.ops.aten.convolution.default or func is torch.ops.aten.convolution_backward.default:
            backward = func is torch.ops.aten.convolution_backward.default
            start = self.clock()
            out = func(*args, **kwargs)
            self.cpu_ns["backward" if backward else "forward"] += self.clock() - start
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            self.signatures.append((str(func), *(tuple(t.shape) for t in tensors), str(tensors[0].dtype),
                                    *(repr(a) for a in args if not isinstance(a, torch.Tensor))))  # fmt: skip
            # forward: (input, weight, bias); backward: (grad_output, input, weight)
            grad, data = (tensors[0], tensors[1]) if backward else (None, tensors[0])
            self.layouts.append(("backward" if backward else "forward", _layout(data),
                                 "" if grad is None else _layout(grad)))  # fmt: skip
            return out
        if func is torch.ops.aten._to_copy.default and args and isinstance(args[0], torch.Tensor):
            source = args[0]
            if source.dim() == 4 and source.dtype == torch.float32 and kwargs.get("dtype") == torch.bfloat16:
                self.weight_casts += isinstance(source, nn.Parameter)  # the image input is cast too
        return func(*args, **kwargs)


LAYOUT_VARIANT = "diffkit+fused, diffusers' layout"


def _attention_residual_first(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """``AttentionBlock.forward`` with the sum written ``attended + x``, as diffusers' attention writes it:
    the same numbers (addition commutes exactly), but the result takes the attended tensor's layout,
    channels_last (the token view), so the convolutions after attention run channels_last."""
    batch, channels, height, width = x.shape
    tokens = block.norm(x).flatten(2).transpose(1, 2)
    qkv = block.qkv(tokens).view(batch, height * width, 3, block.heads, channels // block.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = block.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, height * width,
                                                                                      channels))  # fmt: skip
    return out.transpose(1, 2).reshape(batch, channels, height, width) + x


def layout_variant(config: UNetConfig, batch: int, dtype: torch.dtype | None) -> Trainer:
    """diffkit as shipped, its attention blocks returning diffusers' layout (a measurement, not shipped)."""
    trainer = build_trainer(SHIPPED, config, batch, dtype)
    trainer.name = LAYOUT_VARIANT
    for module in trainer.model.modules():
        if isinstance(module, AttentionBlock):
            module.forward = types.MethodType(_attention_residual_first, module)  # type: ignore[method-assign]
    return trainer


def _plain_step(trainer: Trainer) -> None:
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=trainer.dtype or torch.bfloat16, enabled=trainer.dtype is not None):
        out = trainer.forward(trainer.x, trainer.t)
    F.mse_loss(out.float(), trainer.target).backward()
    trainer.optimizer.step()


def conv_audit(preset: str, resolution: int, precision: str, batch: int, rounds: int,
               steps: int) -> dict[str, object]:  # fmt: skip
    """The convolutions of one step in both networks: same shapes? which layouts? one thread's CPU time."""
    config = preset_config(preset, resolution)
    trainers = [build_trainer(kind, config, batch, PRECISIONS[precision]) for kind in CONTENDERS]
    trainers.append(layout_variant(config, batch, PRECISIONS[precision]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audits = {}
        for trainer in trainers:
            _plain_step(trainer)  # warm-up (oneDNN primitives, the optimizer state)
            with ConvAudit() as audit:
                _plain_step(trainer)
            audits[trainer.name] = audit
        cpu: dict[str, list[dict[str, float]]] = {trainer.name: [] for trainer in trainers}
        for index in range(rounds):
            for trainer in trainers if index % 2 == 0 else trainers[::-1]:
                with ConvAudit(timed=True) as timed:
                    start = time.thread_time_ns()
                    for _ in range(steps):
                        _plain_step(trainer)
                    step_ns = time.thread_time_ns() - start
                cpu[trainer.name].append({k: v / steps / 1e6 for k, v in timed.cpu_ns.items()})
                cpu[trainer.name][-1]["step"] = step_ns / steps / 1e6
    finally:
        torch.set_num_threads(threads)
    # With the run's threads, the process's CPU time in the convolutions: on an idle machine about one
    # thread's; on a loaded one, more, by the time threads spin waiting for a descheduled peer.
    spread: dict[str, list[float]] = {kind: [] for kind in CONTENDERS}
    for index in range(rounds if threads > 1 else 0):
        for trainer in trainers[:2] if index % 2 == 0 else trainers[1::-1]:
            with ConvAudit(timed=True, clock=time.process_time_ns) as timed:
                for _ in range(steps):
                    _plain_step(trainer)
            spread[trainer.name].append(sum(timed.cpu_ns.values()) / steps / 1e6)
    ours, theirs = (audits[kind] for kind in CONTENDERS)
    result: dict[str, object] = {
        "same_shapes": sorted(ours.signatures) == sorted(theirs.signatures),
        "calls": len(ours.signatures),
        "threads": threads,
    }
    result["layout_variant_same_shapes"] = sorted(audits[LAYOUT_VARIANT].signatures) == sorted(
        ours.signatures
    )
    for kind, audit in audits.items():
        forward = [layout for op, layout, _ in audit.layouts if op == "forward"]
        grads = [grad for op, _, grad in audit.layouts if op == "backward"]
        rows = cpu[kind]
        result[kind] = {
            "weight_casts": audit.weight_casts,
            "forward_inputs_channels_last": forward.count("channels_last"),
            "forward_inputs_contiguous": forward.count("contiguous"),
            "backward_grads_channels_last": grads.count("channels_last"),
            "backward_grads_strided": grads.count("strided"),
            "cpu_ms_forward_1thread": round(statistics.median(r["forward"] for r in rows), 2),
            "cpu_ms_backward_1thread": round(statistics.median(r["backward"] for r in rows), 2),
            "cpu_ms_1thread": round(statistics.median(r["forward"] + r["backward"] for r in rows), 2),
            "step_cpu_ms_1thread": round(statistics.median(r["step"] for r in rows), 2),
        }
        if spread.get(kind):
            result[kind]["cpu_ms_all_threads"] = round(statistics.median(spread[kind]), 2)  # type: ignore[index]
    per_round = [
        (a["forward"] + a["backward"]) / (b["forward"] + b["backward"])
        for a, b in zip(cpu[CONTENDERS[0]], cpu[CONTENDERS[1]], strict=True)
    ]
    # diffusers' layout given to diffkit, against diffkit as shipped, round by round (< 1: cheaper)
    variant = list(zip(cpu[LAYOUT_VARIANT], cpu[CONTENDERS[0]], strict=True))
    for key, pick in (("conv", lambda r: r["forward"] + r["backward"]), ("step", lambda r: r["step"])):
        ratios = [pick(a) / pick(b) for a, b in variant]
        result[f"layout_variant_{key}_cpu_over_shipped"] = round(statistics.median(ratios), 3)
    result["cpu_ratio_1thread_median"] = round(statistics.median(per_round), 3)
    result["cpu_ratio_1thread_min"], result["cpu_ratio_1thread_max"] = (round(min(per_round), 3),
                                                                        round(max(per_round), 3))  # fmt: skip
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
    parser.add_argument("--audit-rounds", type=int, default=4, help="1-thread convolution audit rounds")
    parser.add_argument("--audit-steps", type=int, default=3, help="steps per contender and audit round")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_train_profile.html"))
    args = parser.parse_args()
    if args.threads:  # one thread on a loaded machine: no cross-thread spin barriers inflating the kernels
        torch.set_num_threads(args.threads)
    if args.quick:
        args.resolutions, args.precisions, args.rounds, args.steps, args.warmup = [32], ["fp32"], 1, 2, 1
        args.audit_rounds, args.audit_steps = 2, 1
    load_before = os.getloadavg()
    cells, rows, limit_rows, audit_rows = {}, [], [], []
    for resolution in args.resolutions:
        for precision in args.precisions:
            cell = run_cell(args.preset, resolution, precision, args.batch_size, args.rounds, args.steps,
                            args.warmup)  # fmt: skip
            audit = conv_audit(args.preset, resolution, precision, args.batch_size, args.audit_rounds,
                               args.audit_steps)  # fmt: skip
            name = f"{resolution}px_{precision}"
            cells[name] = cell | {"limits": limits(cell), "conv_audit": audit}
            for kind in CONTENDERS:
                rows.append({"cell": name, "model": kind, **cell[kind]})
            for kind in (*CONTENDERS, LAYOUT_VARIANT):
                same = audit["same_shapes"] if kind != LAYOUT_VARIANT else audit["layout_variant_same_shapes"]
                audit_rows.append({"cell": name, "model": kind, "same_shapes": same, "calls": audit["calls"],
                                   **audit[kind]})  # type: ignore[dict-item]  # fmt: skip
            limit_rows.append({"cell": name, **cells[name]["limits"]})
            print(name, cell, cells[name]["limits"], audit, flush=True)
    load_after = os.getloadavg()
    cpu_ratios = [c["conv_audit"]["cpu_ratio_1thread_median"] for c in cells.values()]
    wall_ratios = [
        round(c[SHIPPED]["convolution"] / c["diffusers"]["convolution"], 3) for c in cells.values()
    ]
    summary = {
        "preset": args.preset, "batch_size": args.batch_size, "rounds": args.rounds, "steps": args.steps,
        "threads": torch.get_num_threads(), "goal": GOAL,
        "ceiling_if_glue_free_min": min(r["ceiling_if_glue_free"] for r in limit_rows),
        "ceiling_if_glue_free_max": max(r["ceiling_if_glue_free"] for r in limit_rows),
        "glue_cut_needed_min": min(r["glue_cut_needed_for_goal"] for r in limit_rows),
        "glue_cut_needed_max": max(r["glue_cut_needed_for_goal"] for r in limit_rows),
        "diffkit_dense_share_min": min(r["diffkit_dense_share"] for r in limit_rows),
        "diffkit_dense_share_max": max(r["diffkit_dense_share"] for r in limit_rows),
        "conv_same_shapes_all_cells": all(c["conv_audit"]["same_shapes"] for c in cells.values()),
        "conv_cpu_ratio_1thread_min": min(cpu_ratios), "conv_cpu_ratio_1thread_max": max(cpu_ratios),
        "conv_wall_ratio_min": min(wall_ratios), "conv_wall_ratio_max": max(wall_ratios),
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
            heading="Convolutions call by call: same shapes, layouts, and one thread's CPU time (issue 28.3)",
            table=audit_rows,
            text=(
                "same_shapes: every convolution call of one step (forward and backward: shapes, stride,"
                " padding, dtype, which gradients) matches between the networks. weight_casts: fp32"
                " convolution weights autocast casts to bf16 per step (once per weight in both). The"
                " layouts differ: diffusers' attention blocks add the residual to the attention output,"
                " which is channels_last, so its convolutions after attention get channels_last inputs;"
                " diffkit adds them the other way round (contiguous), and its second convolution of a"
                " residual block receives the gradient slice torch.cat's backward hands it (strided)"
                " where diffusers' division by output_scale_factor makes a fresh one. cpu_ms_1thread: the"
                " convolutions' thread CPU time with one torch thread (median over alternating rounds):"
                " the kernels' work, which preemption on a shared machine does not inflate. The two-thread"
                " wall time in the first table also counts oneDNN's spin barriers (its backward-weights"
                " kernels reduce across threads) while the other thread waits for a core; the per-round"
                " spread is in convolution_min/max and convolution_ratio_rounds. The third row is diffkit"
                f" given diffusers' layout ({LAYOUT_VARIANT!r}: its attention blocks write the sum as"
                " diffusers does, the same numbers); the cells' layout_variant_*_cpu_over_shipped say what"
                " that layout changes in the convolutions' and the whole step's CPU time (below 1: cheaper)."
                " cpu_ms_all_threads (runs with more than one thread): the process's CPU time in the"
                " convolutions with the run's threads; above cpu_ms_1thread by what the threads burn"
                " waiting for each other (spinning while a peer waits for a core, on a loaded machine)."
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
