"""Benchmark training throughput of diffkit's U-Net against diffusers' ``UNet2DModel`` on this machine.

One training step = forward + backward + AdamW step with an MSE loss against a random target, at the
same batch, resolution and precision for both models. The diffusers model is built with the same
level widths, blocks per level, attention levels and head size as the diffkit preset, so both have
(nearly) the same parameter count; the ratio is printed. diffusers runs as its example does (eager,
NCHW, AdamW with torch's default implementation). Each cell runs ``--rounds`` rounds; in a round every
contender takes ``--steps`` timed steps in turn (the order flips every round), the speed ratio is taken
within the round, and the report gives the median ratio and its spread, with the load average before
and after. With one torch thread (``--threads 1``) each ratio is also taken in thread CPU time, the
step's work, which a loaded machine does not inflate (``cpu_*`` keys). A lever section measures
diffkit variants (channels_last, fused AdamW, torch.compile, and diffusers compiled too, so a compiler
gain is not counted as diffkit's) in the same interleaved way: each compiled model against its own
eager self, and compiled diffkit against compiled diffusers.

A scaling section times diffkit's step in DistributedDataParallel over gloo on the CPU: one rank with
one thread, one rank with two threads (what the machine does without DDP) and two ranks with one
thread each and half the batch each, in rounds of freshly started processes (order alternating);
scaling efficiency = img/s of K ranks / (K x img/s of one rank with the same threads per rank).

MFU (model FLOPs utilisation) = achieved FLOP/s / peak matmul FLOP/s, where achieved = 3 x forward
FLOPs per image (FlopCounterMode, 1 MAC = 2 FLOPs) x images/s, and the peak is a large square matmul in
the same precision measured in the same run (best of several, before and after the model runs).

    .venv/bin/python -m benchmarks.bench_train            # tiny, batch 8, 32+64 px, fp32+bf16, 3x10 steps,
                                                          # all levers, 1 vs 2 ranks (~40 min idle, 2 cores)
    .venv/bin/python -m benchmarks.bench_train --quick    # smoke: 32 px, 3x2 steps, fused lever, 1 vs 2 ranks
    .venv/bin/python -m benchmarks.bench_train --threads 1 --rounds 5 --steps 4 --levers --no-scaling
                                                          # main cells on a loaded machine (CPU-time ratios)

Needs ``pip install diffusers`` (the ``bench`` extra). Results: ``reports/bench_train.html`` + ``.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.twins import PRECISIONS, SHIPPED, Trainer, build_trainer, counted_flops
from diffkit.models.config import UNetConfig, preset_config
from diffkit.models.stats import count_parameters, flops_per_image
from diffkit.models.unet import UNet
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report


@dataclass
class Measurement:
    model: str
    resolution: int
    precision: str
    batch_size: int
    params_m: float
    gflops_forward_per_image: float
    median_step_s: float
    min_step_s: float
    images_per_s: float
    achieved_gflops: float
    mfu: float


def matmul_peak(dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a square matmul (the machine's practical ceiling for conv/attention work)."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 4 * 2 * size**3 / best


def interleaved(
    kinds: list[str],
    config: UNetConfig,
    batch: int,
    dtype: torch.dtype | None,
    rounds: int,
    steps: int,
    warmup: int,
) -> tuple[list[Trainer], list[dict[str, float]]]:
    """Every contender's step times; per round, each contender's median step time (order flips)."""
    trainers = [build_trainer(kind, config, batch, dtype) for kind in kinds]
    for trainer in trainers:
        start = time.perf_counter()
        for _ in range(warmup):  # compilation (if any) and allocator warm-up happen here, untimed
            trainer.step(record=False)
        trainer.warmup_s = time.perf_counter() - start
    per_round: list[dict[str, float]] = []
    for index in range(rounds):
        order = trainers if index % 2 == 0 else trainers[::-1]
        medians: dict[str, float] = {}
        for trainer in order:
            before = len(trainer.times)
            for _ in range(steps):
                trainer.step(record=True)
            medians[trainer.name] = statistics.median(trainer.times[before:])
            medians[f"{trainer.name}{CPU}"] = statistics.median(trainer.cpu_times[before:])
        per_round.append(medians)
    return trainers, per_round


def measure(trainer: Trainer, resolution: int, precision: str, batch: int, peaks: dict[str, float]
            ) -> Measurement:  # fmt: skip
    flops = counted_flops(trainer.model, resolution)
    median = statistics.median(trainer.times)
    images_per_s = batch / median
    achieved = 3 * flops * images_per_s
    return Measurement(
        model=trainer.name, resolution=resolution, precision=precision, batch_size=batch,
        params_m=round(count_parameters(trainer.model) / 1e6, 3),
        gflops_forward_per_image=round(flops / 1e9, 3),
        median_step_s=round(median, 4), min_step_s=round(min(trainer.times), 4),
        images_per_s=round(images_per_s, 3), achieved_gflops=round(achieved / 1e9, 2),
        mfu=round(achieved / peaks[precision], 4),
    )  # fmt: skip


def ratio_row(a: str, b: str, per_round: list[dict[str, float]]) -> dict[str, float]:
    """Speed ratio a/b from each round's medians (same round, same load): median, min, max."""
    ratios = [r[b] / r[a] for r in per_round]
    return {"ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3)}  # fmt: skip


def run_config(
    preset: str,
    resolution: int,
    precision: str,
    batch: int,
    rounds: int,
    steps: int,
    warmup: int,
    peaks: dict[str, float],
) -> tuple[list[Measurement], dict[str, float]]:
    config = preset_config(preset, resolution)
    # diffkit and diffusers with the same (default) AdamW compare the networks; "diffkit+fused" is
    # diffkit as `diffkit train` runs it (fused AdamW on CPU and CUDA) against diffusers as its example:
    # that row measures an optimizer flag, not the network. The peer protocol's row is "diffusers+fused":
    # diffusers with the same flag, as a competent user would run it.
    kinds = ["diffkit", "diffusers", SHIPPED, PEER_FUSED]
    trainers, per_round = interleaved(kinds, config, batch, PRECISIONS[precision], rounds, steps, warmup)
    results = [measure(trainer, resolution, precision, batch, peaks) for trainer in trainers]
    ratios: dict[str, float] = {}
    # with one torch thread, the same ratios in CPU time too: the step's work, robust to a loaded machine
    for suffix in ("", CPU) if torch.get_num_threads() == 1 else ("",):
        prefix = "cpu_" if suffix else ""
        for name, (a, b) in {"": ("diffkit", "diffusers"), "shipped_": (SHIPPED, "diffusers"),
                             "fused_": (SHIPPED, PEER_FUSED)}.items():  # fmt: skip
            row = ratio_row(a + suffix, b + suffix, per_round)
            ratios |= {f"{prefix}{name}{k}": v for k, v in row.items()}
    return results, ratios


PEER_FUSED = "diffusers+fused"  # diffusers with fused AdamW: both sides with the same optimizer flag
CPU = "@cpu"  # per-round keys of the thread CPU time medians
CELL_KINDS = 4  # measurements per cell: diffkit, diffusers, diffkit+fused, diffusers+fused

LEVERS = {
    "channels_last": ["diffkit", "diffkit+channels_last"],
    "fused": ["diffkit", "diffkit+fused"],
    "compile": ["diffkit", "diffkit+compile", "diffusers", "diffusers+compile"],
}


def run_levers(
    names: list[str],
    preset: str,
    resolution: int,
    precision: str,
    batch: int,
    rounds: int,
    steps: int,
    warmup: int,
) -> list[dict[str, object]]:
    """Each lever against its baseline, interleaved in the same rounds."""
    config = preset_config(preset, resolution)
    rows: list[dict[str, object]] = []
    for name in names:
        kinds = LEVERS[name]
        trainers, per_round = interleaved(kinds, config, batch, PRECISIONS[precision], rounds, steps,
                                          max(warmup, 2 if name == "compile" else warmup))  # fmt: skip
        for trainer in trainers:
            baseline = trainer.name.split("+")[0] if name == "compile" else kinds[0]
            if trainer.name == baseline:
                continue
            row: dict[str, object] = {"lever": name, "contender": trainer.name, "baseline": baseline,
                                      "resolution": resolution, "precision": precision,
                                      "median_step_s": round(statistics.median(trainer.times), 4),
                                      "warmup_s": round(trainer.warmup_s, 1),
                                      **ratio_row(trainer.name, baseline, per_round)}  # fmt: skip
            if name == "compile" and trainer.name == "diffkit+compile":
                row.update(
                    {
                        f"vs diffusers+compile {k}": v
                        for k, v in ratio_row(trainer.name, "diffusers+compile", per_round).items()
                    }
                )
            rows.append(row)
            print(f"lever {trainer.name:24s} vs {baseline:10s} {resolution}px {precision}: "
                  f"{row['ratio_median']:.2f}x (warm-up {trainer.warmup_s:.0f} s)", flush=True)  # fmt: skip
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_rank(
    rank: int,
    size: int,
    port: int,
    threads: int,
    config: UNetConfig,
    batch: int,
    dtype: torch.dtype | None,
    warmup: int,
    steps: int,
    queue: multiprocessing.Queue,
) -> None:
    """One rank of a scaling cell: diffkit's step (fused AdamW, as on the CPU in training) under DDP."""
    torch.set_num_threads(threads)
    if size > 1:
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size
        )
    torch.manual_seed(0)
    model = UNet(config).train()
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if size > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(rank)
    share = batch // size
    x = torch.randn(share, 3, config.resolution, config.resolution, generator=generator)
    target = torch.randn(share, 3, config.resolution, config.resolution, generator=generator)
    t = torch.randint(0, 1000, (share,), generator=generator).float()
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = wrapped(x, t)
        F.mse_loss(out.float(), target).backward()
        optimizer.step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(times)
    if size > 1:
        torch.distributed.destroy_process_group()


SCALING_CELLS = {"1 rank x 1 thread": (1, 1), "1 rank x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}


def run_scaling(preset: str, resolution: int, precision: str, batch: int, rounds: int, steps: int,
                warmup: int, peaks: dict[str, float]) -> list[dict[str, object]]:  # fmt: skip
    """Throughput of one and two gloo ranks on the CPU, per round in fresh processes, order alternating."""
    config = preset_config(preset, resolution)
    flops = flops_per_image(UNet(config), resolution)
    # spawn, not fork: a child forked from a parent whose OpenMP pool has run can hang in its first op.
    context = multiprocessing.get_context("spawn")
    medians: dict[str, list[float]] = {name: [] for name in SCALING_CELLS}
    times: dict[str, list[float]] = {name: [] for name in SCALING_CELLS}
    for index in range(rounds):
        names = list(SCALING_CELLS) if index % 2 == 0 else list(SCALING_CELLS)[::-1]
        for name in names:
            size, threads = SCALING_CELLS[name]
            queue = context.Queue()
            port = _free_port()
            ranks = [
                context.Process(target=_ddp_rank, args=(rank, size, port, threads, config, batch,
                                                         PRECISIONS[precision], warmup, steps, queue))
                for rank in range(size)
            ]  # fmt: skip
            for process in ranks:
                process.start()
            cell_times = queue.get(timeout=1800)
            for process in ranks:
                process.join(60)
            times[name] += cell_times
            medians[name].append(statistics.median(cell_times))
    rows: list[dict[str, object]] = []
    one = batch / statistics.median(times["1 rank x 1 thread"])
    for name, (size, threads) in SCALING_CELLS.items():
        speed = batch / statistics.median(times[name])
        per_round = [batch / m for m in medians[name]]
        rows.append({
            "cell": name, "ranks": size, "threads_per_rank": threads, "resolution": resolution,
            "precision": precision, "batch_size": batch, "timed_steps": len(times[name]),
            "img_per_s": round(speed, 2), "img_per_s_min": round(min(per_round), 2),
            "img_per_s_max": round(max(per_round), 2),
            "scaling_efficiency": round(speed / (size * one), 3) if threads == 1 else None,
            "mfu": round(3 * flops * speed / peaks[precision], 4),
        })  # fmt: skip
        efficiency = f", efficiency {rows[-1]['scaling_efficiency']:.2f}" if threads == 1 else ""
        print(f"scaling {name:20s} {resolution}px {precision}: {speed:6.2f} img/s{efficiency}", flush=True)
    return rows


def estimate_minutes(args: argparse.Namespace) -> float:
    """A rough plan: one timed diffkit step per cell, times the steps the run will take, plus compiles."""
    total = 0.0
    for resolution in args.resolutions:
        for precision in args.precisions:
            trainer = build_trainer(
                "diffkit", preset_config(args.preset, resolution), args.batch_size, PRECISIONS[precision]
            )
            trainer.step(record=False)
            start = time.perf_counter()
            trainer.step(record=False)
            step = time.perf_counter() - start
            # diffusers is about as fast; its twin, plus warm-ups
            total += step * 2 * (args.rounds * args.steps + args.warmup)
            if resolution == args.resolutions[0]:
                contenders = sum(len(LEVERS[name]) for name in args.levers)
                total += step * contenders * (args.rounds * args.lever_steps + args.warmup)
                total += COMPILE_WARMUP_S * (2 if "compile" in args.levers else 0)
                if precision == args.precisions[0] and args.scaling:
                    total += (
                        step * 2.5 * 3 * args.rounds * (args.steps + args.warmup)
                    )  # 1 thread is ~2x slower
    return total / 60


COMPILE_WARMUP_S = 150  # a cold inductor compile of the tiny U-Net's training step on a 2-core CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 4, 32 px, 3x2 steps")
    parser.add_argument("--preset", default="tiny", help="diffkit preset to compare (default: tiny)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell (order flips every round)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument(
        "--levers",
        nargs="*",
        default=list(LEVERS),
        choices=list(LEVERS),
        help="diffkit variants measured at the first resolution",
    )
    parser.add_argument(
        "--lever-steps", type=int, default=10, help="timed steps per lever contender and round"
    )
    parser.add_argument(
        "--no-scaling", dest="scaling", action="store_false", help="skip 1 rank vs 2 ranks (gloo, CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_train.html"))
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.steps, args.lever_steps, args.warmup = 4, 2, 2, 1
        args.resolutions, args.levers, args.precisions = [32], ["fused"], ["fp32"]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"estimated time: ~{estimate_minutes(args):.0f} min on this machine at its current load", flush=True
    )

    load_before = os.getloadavg()
    peak_size = 1024 if args.quick else 2048
    peaks = {name: matmul_peak(dtype or torch.float32, peak_size) for name, dtype in PRECISIONS.items()}
    results: list[Measurement] = []
    cell_ratios: list[dict[str, float]] = []
    started = time.perf_counter()
    for resolution in args.resolutions:
        for precision in args.precisions:
            batch, ratio = run_config(args.preset, resolution, precision, args.batch_size, args.rounds,
                                      args.steps, args.warmup, peaks)  # fmt: skip
            for m in batch:
                print(
                    f"{m.model:9s} {resolution:3d}px {precision}: {m.images_per_s:7.2f} img/s "
                    f"(median step {m.median_step_s:.3f} s), {m.params_m:.2f}M params, "
                    f"{m.gflops_forward_per_image:.2f} GFLOPs fwd, MFU {100 * m.mfu:.1f}%",
                    flush=True,
                )
            results.extend(batch)
            cell_ratios.append(ratio)
    lever_rows: list[dict[str, object]] = []
    for precision in args.precisions if args.levers else []:
        lever_rows += run_levers(args.levers, args.preset, args.resolutions[0], precision, args.batch_size,
                                 args.rounds, args.lever_steps, args.warmup)  # fmt: skip
    scaling_rows: list[dict[str, object]] = []
    if args.scaling:
        scaling_rows = run_scaling(args.preset, args.resolutions[0], args.precisions[0], args.batch_size,
                                   args.rounds, args.steps, args.warmup, peaks)  # fmt: skip
    for name, dtype in PRECISIONS.items():  # the peak is the best seen before or after the runs
        peaks[name] = max(peaks[name], matmul_peak(dtype or torch.float32, peak_size))
    for m in results:
        m.mfu = round(m.achieved_gflops * 1e9 / peaks[m.precision], 4)
    scaling_flops = flops_per_image(
        UNet(preset_config(args.preset, args.resolutions[0])), args.resolutions[0]
    )
    for row in scaling_rows:  # against the final peak, like the other cells
        row["mfu"] = round(3 * float(row["img_per_s"]) * scaling_flops / peaks[str(row["precision"])], 4)
    elapsed = time.perf_counter() - started

    ratios = []
    n = CELL_KINDS
    for ours, theirs, shipped, peer_fused, ratio in zip(results[::n], results[1::n], results[2::n],
                                                        results[3::n], cell_ratios, strict=True):  # fmt: skip
        ratios.append({
            "resolution": ours.resolution, "precision": ours.precision,
            "diffkit_img_s": ours.images_per_s, "diffusers_img_s": theirs.images_per_s,
            # the median of per-round ratios: each round's models ran under the same load
            "speed_ratio_diffkit_over_diffusers": ratio["ratio_median"],
            "speed_ratio_min": ratio["ratio_min"], "speed_ratio_max": ratio["ratio_max"],
            "shipped_img_s": shipped.images_per_s,
            "shipped_ratio_over_diffusers": ratio["shipped_ratio_median"],
            "shipped_ratio_min": ratio["shipped_ratio_min"], "shipped_ratio_max": ratio["shipped_ratio_max"],
            # the same fused AdamW on both sides (the peer protocol's row): the networks and the flag alike
            "fused_peer_img_s": peer_fused.images_per_s,
            "fused_ratio_over_fused_diffusers": ratio["fused_ratio_median"],
            "fused_ratio_min": ratio["fused_ratio_min"], "fused_ratio_max": ratio["fused_ratio_max"],
            "shipped_row_is": "diffkit's fused-AdamW flag against diffusers' default AdamW",
            "goal_1_3x_met": ratio["shipped_ratio_median"] >= 1.3,
            "goal_1_3x_met_fused_both": ratio["fused_ratio_median"] >= 1.3,
            **{k: v for k, v in ratio.items() if k.startswith("cpu_")},
            "param_ratio": round(ours.params_m / theirs.params_m, 3),
            "diffkit_mfu": ours.mfu, "diffusers_mfu": theirs.mfu,
        })  # fmt: skip
        speed = ratios[-1]["speed_ratio_diffkit_over_diffusers"]
        shipped_x, both_x = ratio["shipped_ratio_median"], ratio["fused_ratio_median"]
        print(f"{ours.resolution}px {ours.precision}: diffkit/diffusers speed {speed:.2f}x "
              f"(rounds {ratio['ratio_min']:.2f}-{ratio['ratio_max']:.2f}); fused AdamW on diffkit "
              f"only {shipped_x:.2f}x, on both {both_x:.2f}x")  # fmt: skip
    load_after = os.getloadavg()
    summary = {
        "preset": args.preset, "batch_size": args.batch_size, "timed_steps": args.rounds * args.steps,
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "peak_fp32_gflops": round(peaks["fp32"] / 1e9, 1), "peak_bf16_gflops": round(peaks["bf16"] / 1e9, 1),
        "load_avg_1min_before": round(load_before[0], 2), "load_avg_1min_after": round(load_after[0], 2),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in load_after],
        "seconds": round(elapsed, 1), "torch": torch.__version__,
        "scaling_efficiency_2_ranks": next(
            (r["scaling_efficiency"] for r in scaling_rows if r["ranks"] == 2), None
        ),
    }  # fmt: skip
    for row in ratios:
        key = f"speed_ratio_{row['resolution']}px_{row['precision']}"
        summary[key] = row["speed_ratio_diffkit_over_diffusers"]
        summary[key.replace("speed", "shipped")] = row["shipped_ratio_over_diffusers"]
        summary[key.replace("speed", "fused_both")] = row["fused_ratio_over_fused_diffusers"]
    caveat = (
        f"Measured on a shared {os.cpu_count()}-core CPU (1-minute load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after): absolute figures are noisy and deflated by other processes; the "
        "per-round diffkit/diffusers ratio is the robust figure. MFU uses the best square-matmul rate "
        "seen in this run as the peak; convolutions with few channels cannot reach it."
    )
    report = Report(
        title=f"Training throughput: diffkit U-Net ({args.preset}) vs diffusers UNet2DModel",
        command="bench_train",
        summary=summary,
        sections=[
            Section(heading="Speed ratio diffkit / diffusers (same batch, size, precision)", table=ratios),
            Section(heading="Measurements", table=[asdict(m) for m in results]),
            Section(heading="Levers (each against its baseline, same rounds)", table=lever_rows),
            Section(heading="Scaling: one vs two gloo ranks on the CPU (DDP)", table=scaling_rows),
            Section(heading="Caveats", text=caveat, badges=["CPU", "noisy"]),
        ],
        data={
            "summary": summary,
            "ratios": ratios,
            "measurements": [asdict(m) for m in results],
            "levers": lever_rows,
            "scaling": scaling_rows,
        },  # fmt: skip
    )
    paths = write_report(report, args.out)
    print(f"report: {paths.html} ({paths.json})")


if __name__ == "__main__":
    main()
