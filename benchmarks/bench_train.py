"""Benchmark training throughput of diffkit's U-Net against diffusers' ``UNet2DModel`` on this machine.

One training step = forward + backward + AdamW step with an MSE loss against a random target, at the
same batch, resolution and precision for both models. The diffusers model is built with the same
level widths, blocks per level, attention levels and head size as the diffkit preset, so both have
(nearly) the same parameter count; the ratio is printed. Steps of the two models are interleaved
(A, B, A, B, ...) and the median step time is used, so load from other processes hits both alike.

MFU (model FLOPs utilisation) = achieved FLOP/s / peak matmul FLOP/s, where achieved = 3 x forward
FLOPs per image (FlopCounterMode, 1 MAC = 2 FLOPs) x images/s, and the peak is a large square matmul in
the same precision measured in the same run (best of several, before and after the model runs).

    .venv/bin/python benchmarks/bench_train.py            # preset small, batch 8, 32 and 64 px, fp32 + bf16
    .venv/bin/python benchmarks/bench_train.py --quick    # preset tiny, batch 4, 32 px only: a minute
    .venv/bin/python benchmarks/bench_train.py --preset base --batch-size 16 --steps 10

Needs ``pip install diffusers`` (the ``bench`` extra). Results: ``reports/bench_train.html`` + ``.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffkit.models import UNet, UNetConfig, count_parameters, flops_per_image, preset_config
from diffkit.report import Report, Section, write_report

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


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


def diffusers_twin(config: UNetConfig) -> nn.Module:
    """``UNet2DModel`` with diffkit's level widths, blocks per level, attention levels and head size."""
    from diffusers import UNet2DModel

    widths = tuple(config.channels * m for m in config.channel_mults)
    attend = [size in config.attention_resolutions for size in config.level_resolutions]
    return UNet2DModel(
        sample_size=config.resolution,
        in_channels=config.in_channels,
        out_channels=config.output_channels,
        block_out_channels=widths,
        layers_per_block=config.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attend),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)),
        attention_head_dim=config.head_dim,
        norm_num_groups=math.gcd(32, *widths),  # diffusers uses one group count for all layers
        dropout=config.dropout,
    )


def forward_fn(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if isinstance(model, UNet):
        return model
    return lambda x, t: model(x, t).sample


def counted_flops(model: nn.Module, resolution: int) -> int:
    if isinstance(model, UNet):
        return flops_per_image(model, resolution)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        forward_fn(model)(torch.zeros(1, 3, resolution, resolution), torch.zeros(1))
    return int(counter.get_total_flops())


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


class Trainer:
    """One model's training step on fixed random inputs (the data pipeline is not under test)."""

    def __init__(self, name: str, model: nn.Module, batch: int, resolution: int, dtype: torch.dtype | None):
        self.name, self.model, self.dtype = name, model.train(), dtype
        self.forward = forward_fn(model)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, resolution, resolution, generator=generator)
        self.target = torch.randn(batch, 3, resolution, resolution, generator=generator)
        self.t = torch.randint(0, 1000, (batch,), generator=generator).float()
        self.times: list[float] = []

    def step(self, record: bool) -> None:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            out = self.forward(self.x, self.t)
        loss = F.mse_loss(out.float(), self.target)
        loss.backward()
        self.optimizer.step()
        if record:
            self.times.append(time.perf_counter() - start)


def run_config(
    preset: str, resolution: int, precision: str, batch: int, steps: int, warmup: int, peaks: dict[str, float]
) -> list[Measurement]:
    config = preset_config(preset, resolution)
    torch.manual_seed(0)
    ours = UNet(config)
    torch.manual_seed(0)
    theirs = diffusers_twin(config)
    dtype = PRECISIONS[precision]
    trainers = [
        Trainer("diffkit", ours, batch, resolution, dtype),
        Trainer("diffusers", theirs, batch, resolution, dtype),
    ]
    for _ in range(warmup):
        for trainer in trainers:
            trainer.step(record=False)
    for _ in range(steps):  # interleaved, so background load affects both models alike
        for trainer in trainers:
            trainer.step(record=True)
    results = []
    for trainer in trainers:
        flops = counted_flops(trainer.model, resolution)
        median = statistics.median(trainer.times)
        images_per_s = batch / median
        achieved = 3 * flops * images_per_s
        results.append(
            Measurement(
                model=trainer.name, resolution=resolution, precision=precision, batch_size=batch,
                params_m=round(count_parameters(trainer.model) / 1e6, 3),
                gflops_forward_per_image=round(flops / 1e9, 3),
                median_step_s=round(median, 4), min_step_s=round(min(trainer.times), 4),
                images_per_s=round(images_per_s, 3), achieved_gflops=round(achieved / 1e9, 2),
                mfu=round(achieved / peaks[precision], 4),
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny preset, batch 4, 32 px, 3 steps")
    parser.add_argument("--preset", default="small", help="diffkit preset to compare (default: small)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_train.html"))
    args = parser.parse_args()
    if args.quick:
        args.preset, args.batch_size, args.steps, args.warmup, args.resolutions = "tiny", 4, 3, 1, [32]
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    peak_size = 1024 if args.quick else 2048
    peaks = {name: matmul_peak(dtype or torch.float32, peak_size) for name, dtype in PRECISIONS.items()}
    results: list[Measurement] = []
    started = time.perf_counter()
    for resolution in args.resolutions:
        for precision in args.precisions:
            batch = run_config(
                args.preset, resolution, precision, args.batch_size, args.steps, args.warmup, peaks
            )
            for m in batch:
                print(
                    f"{m.model:9s} {resolution:3d}px {precision}: {m.images_per_s:7.2f} img/s "
                    f"(median step {m.median_step_s:.3f} s), {m.params_m:.2f}M params, "
                    f"{m.gflops_forward_per_image:.2f} GFLOPs fwd, MFU {100 * m.mfu:.1f}%",
                    flush=True,
                )
            results.extend(batch)
    for name, dtype in PRECISIONS.items():  # the peak is the best seen before or after the runs
        peaks[name] = max(peaks[name], matmul_peak(dtype or torch.float32, peak_size))
    for m in results:
        m.mfu = round(m.achieved_gflops * 1e9 / peaks[m.precision], 4)
    elapsed = time.perf_counter() - started

    ratios = []
    for ours, theirs in zip(results[::2], results[1::2], strict=True):
        ratios.append({
            "resolution": ours.resolution, "precision": ours.precision,
            "diffkit_img_s": ours.images_per_s, "diffusers_img_s": theirs.images_per_s,
            "speed_ratio_diffkit_over_diffusers": round(ours.images_per_s / theirs.images_per_s, 3),
            "param_ratio": round(ours.params_m / theirs.params_m, 3),
            "diffkit_mfu": ours.mfu, "diffusers_mfu": theirs.mfu,
        })
        speed = ratios[-1]["speed_ratio_diffkit_over_diffusers"]
        print(f"{ours.resolution}px {ours.precision}: diffkit/diffusers speed {speed:.2f}x")
    load_after = os.getloadavg()[0]
    summary = {
        "preset": args.preset, "batch_size": args.batch_size, "timed_steps": args.steps,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "peak_fp32_gflops": round(peaks["fp32"] / 1e9, 1), "peak_bf16_gflops": round(peaks["bf16"] / 1e9, 1),
        "load_avg_1min_before": round(load_before, 2), "load_avg_1min_after": round(load_after, 2),
        "seconds": round(elapsed, 1), "torch": torch.__version__,
    }
    for row in ratios:
        key = f"speed_ratio_{row['resolution']}px_{row['precision']}"
        summary[key] = row["speed_ratio_diffkit_over_diffusers"]
    caveat = (
        f"Measured on a shared {os.cpu_count()}-core CPU (1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after): absolute figures are noisy and deflated by other processes; the "
        "interleaved diffkit/diffusers ratio is the robust figure. MFU uses the best square-matmul rate "
        "seen in this run as the peak; convolutions with few channels cannot reach it."
    )
    report = Report(
        title=f"Training throughput: diffkit U-Net ({args.preset}) vs diffusers UNet2DModel",
        command="bench_train",
        summary=summary,
        sections=[
            Section(heading="Speed ratio diffkit / diffusers (same batch, size, precision)", table=ratios),
            Section(heading="Measurements", table=[asdict(m) for m in results]),
            Section(heading="Caveats", text=caveat, badges=["CPU", "noisy"]),
        ],
        data={"summary": summary, "ratios": ratios, "measurements": [asdict(m) for m in results]},
    )
    paths = write_report(report, args.out)
    print(f"report: {paths.html} ({paths.json})")


if __name__ == "__main__":
    main()
