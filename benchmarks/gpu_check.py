"""One-command check of diffkit's CUDA training paths on a GPU: ``python benchmarks/gpu_check.py``.

Trains the ``small`` preset for a few hundred steps in bf16 and in fp16 (GradScaler), each eager and
under ``torch.compile``, resumes one run once from its state file, samples from it with ``diffkit
sample``, and writes ``reports/gpu_check.json``: per run img/s (steady state: the first logging window,
which holds compilation and warm-up, is left out), MFU against a matmul peak measured in the same run
and precision, peak GPU memory, the loss, and whether the resume continued at the saved step.

    .venv/bin/python benchmarks/gpu_check.py                       # on a CUDA GPU, ~10 min on an H100 †
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json

``--device cpu --quick`` runs the same code on the CPU (tiny preset, 16 px, a few steps; fp16 is
emulated there and allowed only here) to prove the script works; its numbers say nothing about a GPU,
so write them outside ``reports/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from diffkit import device as dev
from diffkit.fakesite.faces import write_face_folder
from diffkit.sample.config import SampleConfig
from diffkit.sample.run import sample
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_NOTE = "CPU run: fp16 is emulated, compile uses inductor's CPU backend; nothing here measures a GPU"


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a square matmul on ``device`` in ``dtype`` (the practical ceiling)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for index in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(8):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first round warms up
            best = min(best, time.perf_counter() - start)
    return 8 * 2 * size**3 / best


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (KiB on Linux)


def steady_img_per_s(run: Path) -> tuple[float | None, float | None]:
    """Median and spread (max-min) of img/s over the logging windows after the first."""
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    speeds = [r["img_per_s"] for r in records[1:] if r.get("img_per_s")]
    if not speeds:
        return None, None
    return statistics.median(speeds), max(speeds) - min(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny preset, 16 px, a few steps")
    parser.add_argument("--data", type=Path, default=None, help="image folder (default: procedural faces)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("reports/gpu_check.json"))
    args = parser.parse_args()
    device = dev.resolve_device(args.device)
    preset, resolution, steps, batch = "small", 64, args.steps, args.batch_size
    if args.quick:
        preset, resolution, steps, batch = "tiny", 16, 6, 4
    if device.type == "cpu":
        dev.CPU_FP16_ALLOWED = True  # emulated and slow: only so the fp16 code path runs here
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    started = time.perf_counter()
    peaks = {name: matmul_peak(device, dtype, 512 if args.quick else 4096) for name, dtype in DTYPES.items()}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        data = args.data
        if data is None:
            data = Path(scratch) / "faces"
            write_face_folder(data, 64 if args.quick else 512, size=resolution, seed=0)
        base = dict(
            data=data, preset=preset, resolution=resolution, batch_size=batch, device=str(device),
            progress=False, report=False, sample_every_kimg=0.0, sample_grid=4, sample_steps=4,
            log_every_steps=max(1, steps // 10), warmup_kimg=0.1, runs_dir=Path(scratch) / "runs",
        )  # fmt: skip
        for precision in DTYPES:
            for compiled in (False, True):
                name = f"{precision}{'-compile' if compiled else ''}"
                out = Path(scratch) / name
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                clock = time.perf_counter()
                if name == "bf16":  # the resumed one: half, then --resume to the full length
                    train(TrainConfig(out=out, steps=steps // 2, precision=precision, **base))
                    result = train(
                        TrainConfig(out=out, steps=steps, precision=precision, resume=True, **base)
                    )
                else:
                    result = train(
                        TrainConfig(out=out, steps=steps, precision=precision, compile=compiled, **base)
                    )
                wall = time.perf_counter() - clock
                speed, spread = steady_img_per_s(out)
                achieved = 3 * result.flops_per_image * speed if speed else None
                rows.append({
                    "run": name, "precision": precision, "compile": compiled, "steps": result.step,
                    "resumed_from_step": result.resumed_from_step, "img_per_s": speed,
                    "img_per_s_spread": spread,
                    "achieved_tflops": achieved / 1e12 if achieved else None,
                    "mfu": achieved / peaks[precision] if achieved else None,
                    "peak_memory_mb": round(peak_memory_mb(device), 1), "final_loss": result.final_loss,
                    "skipped_steps": result.skipped_steps, "wall_s": round(wall, 1),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        resumed = next(row for row in rows if row["run"] == "bf16")
        samples = sample(
            SampleConfig(
                run=Path(scratch) / "bf16",
                n=4,
                steps=4,
                device=str(device),
                precision="bf16" if device.type == "cuda" else "fp32",
                out=Path(scratch) / "samples",
                progress=False,
                write_report=False,
            )  # fmt: skip
        )
        sampled = len(list((Path(scratch) / "samples").glob("*.png")))
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "device_type": device.type, "quick": args.quick, "preset": preset, "resolution": resolution,
        "batch_size": batch, "steps": steps, "torch": torch.__version__,
        "matmul_peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()},
        "resume_ok": resumed["resumed_from_step"] == steps // 2 and resumed["steps"] == steps,
        "samples_written": sampled, "sample_result": str(getattr(samples, "out_dir", "")),
        "load_avg": os.getloadavg(), "seconds": round(time.perf_counter() - started, 1),
        "cpu_note": CPU_NOTE if device.type == "cpu" else None,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
