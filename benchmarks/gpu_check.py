"""One command that checks diffkit's CUDA paths on a GPU: ``python -m benchmarks.gpu_check --out-dir DIR``.

Made for an offline GPU machine lent for minutes (one command of at most 10 minutes): every sub-check
runs in a process of its own (a fresh interpreter on CUDA; forked from this one, which shares its
imports, on the CPU) with a time box, and the whole run is held to ``--budget-s``, so one check that
fails, crashes or hangs is recorded with its error and the others still run. ``DIR/gpu_check.json`` is
rewritten after each check, so a run that is cut off still says what it found; ``DIR/gpu_check.log``
holds every check's output.

The sub-checks, in order (``small`` preset at 64 px, batch 64, on the GPU):

- ``env``: versions (Python, torch, CUDA, cuDNN, NCCL), the GPU, where the packages that travel as
  wheels were imported from, and an import of every diffkit module.
- ``matmul_peak``: the best bf16 and fp16 matmul FLOP/s, the peak that MFU is measured against.
- ``train_{bf16,fp16}[_compile]``: ``diffkit train`` in bf16 and fp16 (GradScaler), eager and under
  ``torch.compile``: steady img/s (logging windows after the first, which holds compilation and
  warm-up), MFU, peak memory, loss, the first window's seconds (compilation shows there).
- ``kill_resume``: a training process is interrupted (SIGINT) mid-run, saves its state and exits; a
  ``--resume`` must continue at exactly the step the state holds.
- ``samplers``: ``diffkit sample`` with every sampler (img/s; the images must not be constant).
- ``eval``: ``diffkit eval --run`` on 1,000 samples with stand-in Inception weights
  (:mod:`diffkit.testing.inception`), and the feature extraction's img/s.
- ``torchrun``: ``diffkit train`` in two processes with NCCL; on one GPU both ranks share it.
- ``diffusers_twin``: img/s of diffkit's U-Net against diffusers' ``UNet2DModel`` at matched size
  (``benchmarks.twins.diffusers_twin``), interleaved rounds, in the same run.

``benchmarks/gpu_check.sh`` is the entry on the GPU machine (it installs the prepared wheels first).
``--device cpu --quick`` runs every check on the CPU at toy size (tiny preset, 8 px, one thread; fp16
emulated; ``torch.compile`` with dynamo's ``eager`` backend, so the compiled path is traced but no
kernels are generated) to prove the script and its imports work; its numbers say nothing about a GPU.

    python -m benchmarks.gpu_check --out-dir reports/gpu_check         # on a CUDA GPU (--budget-s 450)
    python -m benchmarks.gpu_check --out-dir /tmp/gpu_check --device cpu --quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import os
import pkgutil
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Imported from the prepared wheels on the GPU machine (benchmarks/gpu_wheels.py): env records where from.
WHEEL_MODULES = ("diffusers", "torch_fidelity", "cleanfid", "imagehash", "pywt", "importlib_metadata")
# Versions worth knowing when a number looks odd.
PACKAGES = (
    "torch", "torchvision", "triton", "numpy", "pillow", "scipy", "safetensors", "typer", "rich",
    "diffusers", "torch-fidelity", "clean-fid", "ImageHash", "PyWavelets", "huggingface-hub",
)  # fmt: skip
CPU_NOTE = (
    "CPU dry run: one thread, fp16 emulated, torch.compile traced with dynamo's eager backend; "
    "nothing here measures a GPU"
)


@dataclass(frozen=True)
class Size:
    """How big each check is: the GPU run's, or the CPU dry run's (``--quick``)."""

    preset: str
    resolution: int
    batch: int
    steps: int  # per training check
    log_every: int  # stats.jsonl windows: the first holds warm-up and compilation
    faces: int  # procedural training images
    peak_n: int  # square matmul size for the peak
    fixture_steps: int  # the short run that samplers and eval sample from
    sample_n: int
    sample_steps: int
    eval_samples: int
    eval_reference: int
    eval_steps: int
    twin_resolution: int  # diffusers twin (8 px would give its widest attention level zero heads)
    twin_steps: int  # diffusers twin: timed steps per round
    twin_rounds: int


GPU_SIZE = Size(
    preset="small", resolution=64, batch=64, steps=300, log_every=30, faces=512, peak_n=8192,
    fixture_steps=60, sample_n=256, sample_steps=25, eval_samples=1000, eval_reference=512, eval_steps=20,
    twin_resolution=64, twin_steps=20, twin_rounds=3,
)  # fmt: skip
QUICK_SIZE = Size(
    preset="tiny", resolution=8, batch=2, steps=3, log_every=1, faces=12, peak_n=256, fixture_steps=2,
    sample_n=2, sample_steps=2, eval_samples=4, eval_reference=4, eval_steps=2, twin_resolution=16,
    twin_steps=2, twin_rounds=1,
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What every check gets: where to work and how big to be."""

    device: str  # "cuda" or "cpu"
    quick: bool
    scratch: Path  # a temporary folder, removed at the end
    data: Path  # procedural faces at the training resolution
    wheels_site: Path | None  # where gpu_check.sh installed the wheels, if it did
    deadline: float = 0.0  # time.monotonic() at which this check's time box ends

    def left(self, margin: float = 5.0) -> float:
        """Seconds a step inside the check may still take (an inner timeout)."""
        return max(1.0, self.deadline - time.monotonic() - margin)

    @property
    def size(self) -> Size:
        return QUICK_SIZE if self.quick else GPU_SIZE


class CheckFailed(Exception):
    """A check ran but found something wrong (status ``failed``, not ``error``); ``details`` are kept."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], dict[str, Any]]
    gpu_s: float  # time box on the GPU
    cpu_s: float  # time box in the CPU dry run

    def box(self, ctx: Context) -> float:
        return self.cpu_s if ctx.device == "cpu" else self.gpu_s


# --- helpers -----------------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent


def python_cmd(*args: str) -> list[str]:
    """This interpreter (PYTHONPATH, and so the wheels, pass on through the environment)."""
    return [sys.executable, *args]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child interpreter: the repository first on PYTHONPATH, wherever the run
    started, so ``-m benchmarks.gpu_check`` and ``-m diffkit`` find this checkout."""
    path = os.environ.get("PYTHONPATH")
    return os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)} | extra


def run_cmd(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` whose timeout first sends SIGTERM (torchrun passes it on to its ranks, which
    run in sessions of their own and would outlive a SIGKILL), then SIGKILL."""
    with subprocess.Popen(cmd, text=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # process peak RSS (KiB)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def stats_records(run: Path) -> list[dict[str, Any]]:
    path = run / "stats.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if "img_per_s" in record]  # training windows, not evaluations


def steady_speed(run: Path) -> dict[str, float | None]:
    """Median and spread (max-min) of img/s over the logging windows after the first, and the first
    window's seconds (it holds warm-up and, under torch.compile, compilation)."""
    records = stats_records(run)
    speeds = [r["img_per_s"] for r in records[1:] if r.get("img_per_s")]
    first = records[0].get("train_seconds") if records else None
    if not speeds:
        return {"img_per_s": None, "img_per_s_spread": None, "first_window_s": first}
    return {
        "img_per_s": round(statistics.median(speeds), 2),
        "img_per_s_spread": round(max(speeds) - min(speeds), 2),
        "first_window_s": round(first, 2) if first is not None else None,
    }


def setup_process(ctx: Context, resolve: bool = True) -> torch.device:
    """Per check process: the CPU dry run's one thread, fp16 allowed, compile traced without codegen.
    ``resolve=False`` leaves CUDA alone (resolving the device initialises it; a fork must come first)."""
    from diffkit import device as dev

    if ctx.device == "cpu":
        # one thread: on a busy 2-core machine OpenMP's spinning threads made steps 10x slower
        torch.set_num_threads(1)
        dev.CPU_FP16_ALLOWED = True  # emulated and slow: only so the fp16 code path runs here
        if ctx.quick and not getattr(torch.compile, "_gpu_check_eager", False):
            # inductor's C++ codegen takes minutes on a small CPU; dynamo still traces the U-Net
            torch.compile = functools.partial(torch.compile, backend="eager")
            torch.compile._gpu_check_eager = True  # type: ignore[attr-defined]
    return dev.resolve_device(ctx.device) if resolve else torch.device(ctx.device)


def train_config(ctx: Context, out: Path, **overrides: Any) -> Any:
    from diffkit.train.config import TrainConfig

    size = ctx.size
    options: dict[str, Any] = dict(
        data=ctx.data, out=out, preset=size.preset, resolution=size.resolution, batch_size=size.batch,
        steps=size.steps, device=ctx.device, progress=False, report=False, sample_every_kimg=0.0,
        snapshot_every_kimg=0.0, sample_grid=4, sample_steps=4, log_every_steps=size.log_every,
        warmup_kimg=0.1, runs_dir=ctx.scratch / "runs", cache_dir=ctx.scratch / "cache",
    )  # fmt: skip
    return TrainConfig(**(options | overrides))


def fixture_run(ctx: Context, name: str) -> Path:
    """A short bf16 run of this check's own, to sample from (checks share no run folders)."""
    from diffkit.train.run import train

    out = ctx.scratch / name
    train(train_config(ctx, out, steps=ctx.size.fixture_steps, precision="bf16"))
    return out


# --- the checks ----------------------------------------------------------------------------------------


def check_env(ctx: Context) -> dict[str, Any]:
    """Versions, the GPU, where the wheel packages come from, and an import of every diffkit module."""
    from importlib import metadata

    import diffkit

    device = setup_process(ctx)
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpu_count": os.cpu_count(),
    }  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": props.name, "gpu_count": torch.cuda.device_count(),
            "capability": f"{props.major}.{props.minor}", "gpu_memory_gb": round(props.total_memory / 2**30),
            "multiprocessors": props.multi_processor_count, "bf16_supported": torch.cuda.is_bf16_supported(),
        }  # fmt: skip
        nccl = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
        info["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    problems: list[str] = []
    origins: dict[str, str | None] = {}
    for module in WHEEL_MODULES:
        try:
            origins[module] = getattr(importlib.import_module(module), "__file__", None)
        except Exception as exc:  # a missing wheel: the checks that need it will fail too
            problems.append(f"import {module}: {type(exc).__name__}: {exc}")
    from_wheels = None
    if ctx.wheels_site is not None:
        site = str(ctx.wheels_site.resolve())
        from_wheels = {m: bool(f and str(Path(f).resolve()).startswith(site)) for m, f in origins.items()}
    imported = 0
    for module in pkgutil.walk_packages(diffkit.__path__, "diffkit."):
        if module.name.endswith("__main__"):  # runs the CLI when imported
            continue
        try:
            importlib.import_module(module.name)
            imported += 1
        except Exception as exc:
            problems.append(f"import {module.name}: {type(exc).__name__}: {exc}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return info | {
        "packages": versions, "module_files": origins, "from_wheels": from_wheels,
        "diffkit_modules_imported": imported, "diffkit_path": diffkit.__path__[0],
    }  # fmt: skip


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Best FLOP/s of a square matmul on ``device`` in ``dtype`` (the practical ceiling)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for index in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(8):
            a @ b
        sync(device)
        if index:  # the first round warms up
            best = min(best, time.perf_counter() - start)
    return 8 * 2 * size**3 / best


def check_matmul_peak(ctx: Context) -> dict[str, Any]:
    device = setup_process(ctx)
    peaks = {name: matmul_peak(device, dtype, ctx.size.peak_n) for name, dtype in DTYPES.items()}
    return {"size": ctx.size.peak_n, "peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()}}


def train_check(precision: str, compiled: bool) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        from diffkit.train.run import train

        device = setup_process(ctx)
        reset_peak_memory(device)
        out = ctx.scratch / f"train-{precision}{'-compile' if compiled else ''}"
        clock = time.perf_counter()
        result = train(train_config(ctx, out, precision=precision, compile=compiled))
        wall = time.perf_counter() - clock
        row = {
            "precision": result.precision, "compile": compiled, "steps": result.step,
            "batch_size": ctx.size.batch, "flops_per_image": result.flops_per_image,
            "final_loss": result.final_loss, "skipped_steps": result.skipped_steps,
            "peak_memory_mb": peak_memory_mb(device), "wall_s": round(wall, 1),
        }  # fmt: skip
        row |= steady_speed(out)
        if row["img_per_s"]:
            row["achieved_tflops"] = round(3 * result.flops_per_image * row["img_per_s"] / 1e12, 4)
        if result.step != ctx.size.steps or not math.isfinite(result.final_loss or math.nan):
            raise CheckFailed(f"trained {result.step}/{ctx.size.steps} steps, final loss {result.final_loss}")
        return row

    return run


def _fork_train(config: Any, result_path: Path, interrupt: Callable[[], bool] | None, timeout: float) -> int:
    """Train ``config`` in a forked process (the parent has not touched CUDA); SIGINT it as soon as
    ``interrupt()`` holds, as Ctrl-C would. Returns its exit code; its result lands in ``result_path``."""
    pid = os.fork()
    if pid == 0:  # the trainer
        code = 1
        try:
            from diffkit.train.run import train

            result = train(config)
            result_path.write_text(json.dumps(result.to_dict(), default=str))
            code = 130 if result.interrupted else 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline, sent = time.monotonic() + timeout, False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"the trainer did not finish in {timeout:.0f} s")
        if interrupt is not None and not sent and interrupt():
            os.kill(pid, signal.SIGINT)
            sent = True
        time.sleep(0.05)


def check_kill_resume(ctx: Context) -> dict[str, Any]:
    """Interrupt a run after two logging windows; ``--resume`` must continue from the step it saved."""
    setup_process(ctx, resolve=False)  # no CUDA here before the fork: the trainer initialises it
    run, extra = ctx.scratch / "killed", 2 * ctx.size.log_every
    first_path = ctx.scratch / "killed-first.json"
    # Far more steps than it will get: only the interrupt ends it.
    config = train_config(ctx, run, steps=1_000_000, precision="bf16")
    two_windows = lambda: len(stats_records(run)) >= 2  # noqa: E731
    # 60% of the box for the interrupted part, the rest for the resume
    code = _fork_train(config, first_path, two_windows, timeout=0.6 * (ctx.left() + 5.0))
    if not first_path.exists():
        raise CheckFailed(f"the interrupted trainer exited {code} without a result")
    first = json.loads(first_path.read_text())
    from diffkit.runs.folder import STATE_FILE

    saved = torch.load(run / STATE_FILE, map_location="cpu", weights_only=True)
    saved_step = int(saved["step"])
    del saved
    from diffkit.train.run import train

    target = first["step"] + extra
    second = train(train_config(ctx, run, steps=target, precision="bf16", resume=True))
    row = {
        "exit_code": code, "interrupted": first["interrupted"], "interrupted_at_step": first["step"],
        "state_step": saved_step, "resumed_from_step": second.resumed_from_step, "final_step": second.step,
        "target_step": target, "loss_before": first["final_loss"], "loss_after": second.final_loss,
    }  # fmt: skip
    row["resume_ok"] = bool(
        code == 130 and first["interrupted"] and saved_step == first["step"]
        and second.resumed_from_step == saved_step and second.step == target
    )  # fmt: skip
    if not row["resume_ok"]:
        raise CheckFailed("kill and resume did not line up", row)
    return row


def check_samplers(ctx: Context) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    from diffkit.diffusion.names import SAMPLERS
    from diffkit.sample.config import SampleConfig
    from diffkit.sample.run import sample

    setup_process(ctx)
    run = fixture_run(ctx, "sampler-run")
    size, rows, problems = ctx.size, {}, []
    for sampler in SAMPLERS:
        out = ctx.scratch / f"samples-{sampler}"
        options = dict(n=size.sample_n, steps=size.sample_steps, batch_size=size.sample_n, device=ctx.device)
        result = sample(
            SampleConfig(run=run, sampler=sampler, out=out, progress=False, write_report=False, **options)
        )
        pngs = sorted(out.glob("*.png"))
        pixels = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) for path in pngs])
        rows[sampler] = {
            "images": len(pngs), "img_per_s": round(result.img_per_s, 2), "seconds": round(result.seconds, 2),
            "pixel_std": round(float(pixels.std()), 2),
        }  # fmt: skip
        if len(pngs) != size.sample_n or not pixels.std() > 0:
            problems.append(f"{sampler}: {len(pngs)} images, pixel std {pixels.std():.3f}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return {"steps": size.sample_steps, "n": size.sample_n, "samplers": rows}


def check_eval(ctx: Context) -> dict[str, Any]:
    """``diffkit eval --run`` as a user runs it (a process of its own), with stand-in Inception weights."""
    from diffkit.testing.inception import make_inception_weights

    setup_process(ctx)
    size = ctx.size
    run = fixture_run(ctx, "eval-run")
    weights = make_inception_weights(ctx.scratch / "inception-standin.pt")
    # IS needs ten generated images; the dry run keeps Inception's CPU work to eight
    metrics = "fid,kid" if ctx.quick else "fid,kid,is"
    cmd = python_cmd(
        "-m", "diffkit", "eval", "--run", str(run), "--samples", str(size.eval_samples),
        "--reference-samples", str(size.eval_reference), "--steps", str(size.eval_steps),
        "--weights", str(weights), "--device", ctx.device, "--metrics", metrics, "--bootstrap", "0",
        "--cache-dir", str(ctx.scratch / "features"), "--report", str(ctx.scratch / "eval.html"),
        "--batch-size", "100" if not ctx.quick else "10", "--no-progress", "--json",
    )  # fmt: skip
    env = child_env(**({"OMP_NUM_THREADS": "1"} if ctx.device == "cpu" else {}))
    done = run_cmd(cmd, timeout=ctx.left(), stdout=subprocess.PIPE, env=env)
    if done.returncode != 0:
        raise CheckFailed(f"diffkit eval exited {done.returncode} (its error is in the log)")
    result = json.loads(done.stdout)
    extracted = sum(result["features_extracted"].values())
    seconds = sum(v for k, v in result["timings_s"].items() if k.startswith("features"))
    return {
        "n_generated": result["n_generated"], "n_reference": result["n_reference"], "fid": result.get("fid"),
        "kid_mean": result.get("kid_mean"), "is_mean": result.get("is_mean"),
        "timings_s": result["timings_s"], "features_extracted": extracted,
        "extract_img_per_s": round(extracted / seconds, 1) if seconds > 0 else None,
        "weights_status": result.get("weights_status"),
    }  # fmt: skip


def check_torchrun(ctx: Context) -> dict[str, Any]:
    """``diffkit train`` in two torchrun processes: NCCL on CUDA (both ranks on GPU 0 where there is
    only one: NCCL may refuse that, and then this check records NCCL's own words), gloo on the CPU."""
    setup_process(ctx)
    gpus = torch.cuda.device_count() if ctx.device == "cuda" else 0
    share = ctx.device == "cuda" and gpus < 2
    spec, result_path = ctx.scratch / "torchrun-config.json", ctx.scratch / "torchrun-result.json"
    spec.write_text(json.dumps(train_config(ctx, ctx.scratch / "torchrun", precision="bf16").to_dict()))
    cmd = python_cmd(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "benchmarks.gpu_check", "--rank-train", str(spec), str(result_path),
    )  # fmt: skip
    if share:
        cmd.append("--share-gpu")
    env = child_env(NCCL_DEBUG="WARN", OMP_NUM_THREADS="1")
    done = run_cmd(cmd, timeout=ctx.left(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sys.stderr.write(done.stdout + done.stderr)  # into the log
    words = ("NCCL WARN", "Duplicate GPU", "Error", "error:")
    notes = [line.strip() for line in done.stderr.splitlines() if any(word in line for word in words)]
    row: dict[str, Any] = {
        "gpus": gpus, "ranks_share_gpu0": share, "exit_code": done.returncode,
        "backend": "nccl" if ctx.device == "cuda" else "gloo", "error_lines": list(dict.fromkeys(notes))[-6:],
    }  # fmt: skip
    if result_path.exists():
        result = json.loads(result_path.read_text())
        row |= {"world_size": result["world_size"], "steps": result["step"], "img_per_s": result["img_per_s"]}
    if done.returncode != 0 or row.get("world_size") != 2:
        raise CheckFailed(f"torchrun exited {done.returncode}: {' | '.join(row['error_lines'][-3:])}", row)
    return row


def rank_train(spec: Path, result_path: Path, share_gpu: bool) -> int:
    """One torchrun rank of ``check_torchrun``: ``train`` with the config in ``spec``."""
    if share_gpu:
        os.environ["LOCAL_RANK"] = "0"  # both ranks on GPU 0, the only one
    from diffkit.train.config import TrainConfig
    from diffkit.train.run import train

    config = TrainConfig(**json.loads(spec.read_text()))
    if config.device == "cpu":
        torch.set_num_threads(1)
    result = train(config)
    if os.environ.get("RANK", "0") == "0":
        result_path.write_text(json.dumps(result.to_dict(), default=str))
    return 0


class _Stepper:
    """One model's training step (AdamW, MSE against a fixed random target) in bf16 autocast."""

    def __init__(self, model: torch.nn.Module, device: torch.device, size: Size, *, diffkit_way: bool):
        from diffkit.device import channels_last_default

        # diffkit as `diffkit train` runs it (channels_last on CUDA, fused AdamW); diffusers as its
        # example does (NCHW, torch's default AdamW)
        last = diffkit_way and channels_last_default(device)
        memory = torch.channels_last if last else torch.preserve_format
        self.model = model.to(device, memory_format=memory).train()
        self.unwrap = not diffkit_way
        self.device = device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if diffkit_way else None)
        generator = torch.Generator().manual_seed(0)
        shape = (size.batch, 3, size.twin_resolution, size.twin_resolution)
        self.x = torch.randn(shape, generator=generator).to(device, memory_format=memory)
        self.target = torch.randn(shape, generator=generator).to(device)
        self.t = torch.randint(0, 1000, (size.batch,), generator=generator).float().to(device)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.model(self.x, self.t)
        out = out.sample if self.unwrap else out
        torch.nn.functional.mse_loss(out.float(), self.target).backward()
        self.optimizer.step()

    def seconds_per_step(self, steps: int) -> float:
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (time.perf_counter() - start) / steps


def check_diffusers_twin(ctx: Context) -> dict[str, Any]:
    """img/s of diffkit's U-Net and diffusers' UNet2DModel at matched size, in interleaved rounds."""
    from benchmarks.twins import diffusers_twin
    from diffkit.models.config import preset_config
    from diffkit.models.stats import count_parameters
    from diffkit.models.unet import UNet

    device = setup_process(ctx)
    size = ctx.size
    config = preset_config(size.preset, size.twin_resolution)
    torch.manual_seed(0)
    steppers = {
        "diffkit": _Stepper(UNet(config), device, size, diffkit_way=True),
        "diffusers": _Stepper(diffusers_twin(config), device, size, diffkit_way=False),
    }
    for stepper in steppers.values():
        stepper.seconds_per_step(3)  # warm-up: cuDNN autotuning, allocator
    rounds: list[dict[str, float]] = []
    for index in range(size.twin_rounds):
        names = list(steppers) if index % 2 == 0 else list(reversed(steppers))  # the order flips
        rounds.append({name: steppers[name].seconds_per_step(size.twin_steps) for name in names})
    ratios = [r["diffusers"] / r["diffkit"] for r in rounds]  # > 1: diffkit takes less time per step
    return {
        "precision": "bf16", "batch_size": size.batch, "resolution": size.twin_resolution,
        "params": {name: count_parameters(s.model) for name, s in steppers.items()},
        "img_per_s": {n: round(size.batch / statistics.median(r[n] for r in rounds), 1) for n in steppers},
        "speed_ratio_median": round(statistics.median(ratios), 3),
        "speed_ratio_min": round(min(ratios), 3), "speed_ratio_max": round(max(ratios), 3),
        "rounds": size.twin_rounds, "steps_per_round": size.twin_steps,
    }  # fmt: skip


CHECKS: tuple[Check, ...] = (
    Check("env", check_env, 60, 60),
    Check("matmul_peak", check_matmul_peak, 45, 30),
    Check("train_bf16", train_check("bf16", False), 90, 60),
    Check("train_fp16", train_check("fp16", False), 90, 60),
    Check("train_bf16_compile", train_check("bf16", True), 200, 90),
    Check("kill_resume", check_kill_resume, 120, 90),
    Check("samplers", check_samplers, 90, 60),
    Check("eval", check_eval, 150, 120),
    Check("torchrun", check_torchrun, 120, 120),
    Check("diffusers_twin", check_diffusers_twin, 90, 60),
    Check("train_fp16_compile", train_check("fp16", True), 200, 90),
)
CHECKS_BY_NAME = {check.name: check for check in CHECKS}


# --- running them ----------------------------------------------------------------------------------------

MIN_CHECK_S = 10.0  # a check with less time than this left in the budget is skipped, not started
# The whole run's default limit: under 8 minutes with a time-out's kill grace, which leaves the 10-minute
# command limit room for the wheels' install and a margin.
DEFAULT_BUDGET_S = 450.0
KILL_GRACE_S = 10.0  # between SIGTERM and SIGKILL of a check past its time box


def _check_body(check: Check, ctx: Context, result_path: Path) -> None:
    """Run one check inside its own process and write its row (an error is the row, not the end)."""
    try:
        row = {"status": "ok"} | check.run(ctx)
    except CheckFailed as exc:
        row = exc.details | {"status": "failed", "error": str(exc)}
    except BaseException as exc:  # any error is this check's result, not the run's end
        traceback.print_exc()
        row = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:4000]}
    result_path.write_text(json.dumps(row, default=str))


Poll = Callable[[], "int | None"]  # a started check's exit code, None while it runs


def _fork(check: Check, ctx: Context, result_path: Path, log_path: Path) -> tuple[int, Poll]:
    """The check in a forked child: a session of its own (so a time-out kills everything it started),
    output into the log. Returns its pid and poll function."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            # the streams too, in case they were not fds 1 and 2 (pytest's capture replaces them)
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
            _check_body(check, ctx, result_path)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    reaped: list[int] = []

    def poll() -> int | None:  # like Popen.poll: the exit code, once reaped, stays known
        if not reaped:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                reaped.append(os.waitstatus_to_exitcode(raw))
        return reaped[0] if reaped else None

    return pid, poll


def _spawn(check: Check, ctx: Context, result_path: Path, log_path: Path) -> tuple[int, Poll]:
    """The check in a fresh interpreter (``--child``), in a session of its own. Returns pid and poll."""
    context = json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(ctx).items()})
    cmd = python_cmd("-m", "benchmarks.gpu_check", "--child", check.name, context, str(result_path))
    with log_path.open("ab") as log:
        # unbuffered: a check killed at its time box still leaves what it printed in the log
        env = child_env(PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env)
    return proc.pid, proc.poll


def run_child(name: str, context: str, result_path: Path) -> int:
    """``--child``: one check in this (spawned) process."""
    values = json.loads(context)
    for key in ("scratch", "data", "wheels_site"):
        values[key] = Path(values[key]) if values[key] is not None else None
    _check_body(CHECKS_BY_NAME[name], Context(**values), result_path)
    return 0


def _kill_group(pid: int, poll: Poll) -> None:
    """SIGTERM to the check's process group (torchrun passes it on to its ranks), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline and poll() is None:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while poll() is None:
        time.sleep(0.05)


def run_isolated(check: Check, ctx: Context, timeout: float, log_path: Path, launch: str) -> dict[str, Any]:
    """Run one check in a process of its own (forked, or a fresh interpreter: ``launch``) within a time
    box; its row, or why there is none."""
    result_path = ctx.scratch / f"result-{check.name}.json"
    result_path.unlink(missing_ok=True)
    started = time.monotonic()
    start = _fork if launch == "fork" else _spawn
    pid, poll = start(check, replace(ctx, deadline=started + timeout), result_path, log_path)
    status = poll()
    while status is None and time.monotonic() - started < timeout:
        time.sleep(0.1)
        status = poll()
    if status is None:
        _kill_group(pid, poll)
    else:  # whatever the check started and left behind goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    seconds = round(time.monotonic() - started, 1)
    if result_path.exists():
        return json.loads(result_path.read_text()) | {"seconds": seconds}
    if status is None:
        return {"status": "timeout", "error": f"no result in its {timeout:.0f} s time box (killed)",
                "seconds": seconds}  # fmt: skip
    return {"status": "crashed", "error": f"the check's process ended with code {status}", "seconds": seconds}


def summarize(rows: dict[str, dict[str, Any]], ctx: Context, seconds: float, budget: float) -> dict[str, Any]:
    """The headline numbers of every check that produced them."""
    env, peak = rows.get("env", {}), rows.get("matmul_peak", {}).get("peak_tflops", {})
    train: dict[str, Any] = {}
    for name, row in rows.items():
        if name.startswith("train_") and row.get("img_per_s"):
            tflops, top = row.get("achieved_tflops"), peak.get(row.get("precision"))
            train[name] = {
                "img_per_s": row["img_per_s"], "mfu": round(tflops / top, 4) if tflops and top else None,
                "peak_memory_mb": row.get("peak_memory_mb"), "first_window_s": row.get("first_window_s"),
            }  # fmt: skip
    torchrun = rows.get("torchrun", {})
    return {
        "device": env.get("gpu") or platform.machine(), "device_type": ctx.device, "quick": ctx.quick,
        "torch": env.get("torch"), "size": asdict(ctx.size),
        "statuses": {name: row["status"] for name, row in rows.items()},
        "all_ok": bool(rows) and all(row["status"] == "ok" for row in rows.values()),
        "matmul_peak_tflops": peak, "train": train,
        "resume_ok": rows.get("kill_resume", {}).get("resume_ok"),
        "eval_extract_img_per_s": rows.get("eval", {}).get("extract_img_per_s"),
        "torchrun": {k: torchrun.get(k) for k in ("status", "backend", "ranks_share_gpu0", "error")},
        "diffkit_vs_diffusers_speed": rows.get("diffusers_twin", {}).get("speed_ratio_median"),
        "seconds": round(seconds, 1), "budget_s": budget,
        "cpu_note": CPU_NOTE if ctx.device == "cpu" else None,
    }  # fmt: skip


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically: a run cut off mid-write still leaves the previous complete file."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(temp, path)


def run_checks(
    checks: tuple[Check, ...] | list[Check], ctx: Context, out_dir: Path, budget: float, launch: str = "fork"
) -> dict[str, dict[str, Any]]:
    """Every check in turn, each in a process of its own within its time box and the whole within
    ``budget`` seconds; ``out_dir/gpu_check.json`` is rewritten after each one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path, json_path = out_dir / "gpu_check.log", out_dir / "gpu_check.json"
    started = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    for check in checks:
        left = budget - (time.monotonic() - started)
        if left < MIN_CHECK_S:
            why = f"{left:.0f} s of the {budget:.0f} s budget left"
            rows[check.name] = {"status": "skipped", "error": why}
        else:
            timeout = min(check.box(ctx), left)
            _log(log_path, f"=== {check.name} (time box {timeout:.0f} s)")
            rows[check.name] = run_isolated(check, ctx, timeout, log_path, launch)
        row = rows[check.name]
        line = f"{check.name}: {row['status']} ({row.get('seconds', 0)} s) {row.get('error', '')}"
        _log(log_path, f"=== {line}")
        print(line[:300], flush=True)
        summary = summarize(rows, ctx, time.monotonic() - started, budget)
        write_json(json_path, {"summary": summary, "checks": rows})
    return rows


def _log(path: Path, line: str) -> None:
    with path.open("a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def preload() -> None:
    """Import what the checks use once, here, so each forked check starts with it (imports took longer
    than a CPU dry-run check itself). A module that fails to import is left to the check that needs it
    to record. Only imports: this process must not initialise CUDA or start compute threads."""
    for name in (
        "diffkit.train.run", "diffkit.sample.run", "diffkit.testing.inception", "torch._dynamo",
        "torch.utils.flop_counter", "diffusers", "benchmarks.twins", "PIL.Image",
    ):  # fmt: skip
        with contextlib.suppress(Exception):
            importlib.import_module(name)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        yield Path(scratch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out-dir", type=Path, help="where gpu_check.json and gpu_check.log go")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="toy size (the CPU dry run)")
    parser.add_argument("--data", type=Path, default=None, help="image folder (default: procedural faces)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="the run's time limit")
    parser.add_argument("--only", default=None, help="comma list of checks to run (default: all)")
    parser.add_argument("--wheels-site", type=Path, default=None, help="where gpu_check.sh put the wheels")
    parser.add_argument(
        "--launch", choices=("fork", "spawn"), default=None,
        help="each check forked from this process (imports shared; the CPU default) or in a fresh "
        "interpreter (the CUDA default: a library that probes CUDA at import would spoil a fork)",
    )  # fmt: skip
    hidden = argparse.SUPPRESS  # the torchrun check's ranks; one spawned check
    parser.add_argument("--rank-train", nargs=2, type=Path, metavar=("SPEC", "RESULT"), help=hidden)
    parser.add_argument("--share-gpu", action="store_true", help=hidden)
    parser.add_argument("--child", nargs=3, metavar=("CHECK", "CONTEXT", "RESULT"), help=hidden)
    args = parser.parse_args(argv)
    if args.rank_train:  # one rank of the torchrun check
        return rank_train(*args.rank_train, share_gpu=args.share_gpu)
    if args.child:
        return run_child(args.child[0], args.child[1], Path(args.child[2]))
    if args.out_dir is None:
        parser.error("--out-dir is required")
    checks = list(CHECKS)
    if args.only:
        names = [name.strip() for name in args.only.split(",")]
        unknown = sorted(set(names) - {check.name for check in CHECKS})
        if unknown:
            parser.error(f"unknown checks {unknown}; choose from {[check.name for check in CHECKS]}")
        checks = [check for check in CHECKS if check.name in names]
    from diffkit.fakesite.faces import write_face_folder

    launch = args.launch or ("fork" if args.device == "cpu" else "spawn")
    if launch == "fork":
        preload()
    with scratch_dir() as scratch:
        data = args.data.resolve() if args.data else scratch / "faces"
        ctx = Context(args.device, args.quick, scratch, data, args.wheels_site)
        if args.data is None:
            write_face_folder(ctx.data, ctx.size.faces, size=ctx.size.resolution, seed=0)
        rows = run_checks(checks, ctx, args.out_dir, args.budget_s, launch)
    print(f"wrote {args.out_dir / 'gpu_check.json'} and {args.out_dir / 'gpu_check.log'}")
    return 0 if all(row["status"] == "ok" for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
