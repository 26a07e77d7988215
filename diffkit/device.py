"""Device and mixed-precision choice, the one place train, sample and eval ask.

``--device``: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a device
that is asked for but missing is one ``DiffkitError`` naming it, never a torch traceback later.

``--precision``: ``auto`` picks bf16 autocast where the hardware runs it natively. bf16 keeps fp32's
exponent range, so it needs no loss scaling; fp16 does (a ``GradScaler``), and is only used when asked
for (the NaN/black-image reports on lucidrains' tracker are all fp16). On CPUs without native bf16 (no
AVX512-BF16/AMX), bf16 autocast is emulated and slower than fp32, so ``auto`` stays fp32 there. MPS
stays fp32 under ``auto`` (its autocast coverage varies by macOS version).
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from diffkit.errors import DiffkitError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads the names here without it
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # cuda:N: the N-th CUDA GPU


class PrecisionName(str, Enum):
    """``--precision`` choices (Typer lists them; configs also accept the plain strings)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


PRECISIONS = tuple(name.value for name in PrecisionName)
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")
# fp16 on a CPU is refused for users (emulated, many times slower than fp32); tests switch this on to
# run the CUDA fp16 code path (autocast + GradScaler + inf-gradient skips) on the CPU.
CPU_FP16_ALLOWED = False
# Devices whose AdamW has a fused (single-kernel) implementation that diffkit uses. On the CPU the fused
# step beat the foreach one in benchmarks/bench_train.py's "fused" lever; MPS keeps torch's default.
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device diffkit accepts (available or not: that is resolve_device's job)."""
    return (name in DEVICES and name != "cuda:N") or _CUDA_INDEX.match(name) is not None


def device_choices() -> str:
    return ", ".join(DEVICES)


def _unavailable(name: str, why: str) -> DiffkitError:
    return DiffkitError(f"--device {name} was asked for, but {why}; use --device auto or cpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is missing is a user error."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not is_device_name(name):
        raise DiffkitError(f"unknown device {name!r}; use one of {device_choices()}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise _unavailable(name, "torch sees no CUDA GPU")
        found = _CUDA_INDEX.match(name)
        if found is not None and int(found.group(1)) >= torch.cuda.device_count():
            raise _unavailable(name, f"torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if name == "mps" and not torch.backends.mps.is_available():
        raise _unavailable(name, "MPS is not available here")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> str:
    import torch

    if requested not in PRECISIONS:
        raise DiffkitError(f"unknown precision {requested!r}; use auto, fp32, bf16 or fp16")
    bf16_ok = (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
        device.type == "cpu" and cpu_has_native_bf16()
    )
    if requested == "auto":
        return "bf16" if bf16_ok else "fp32"
    if requested == "fp16" and device.type == "cpu" and not CPU_FP16_ALLOWED:
        # Measured here: a tiny 16 px step took ~25 s in fp16 autocast vs ~0.3 s in fp32 (no fp16 kernels).
        raise DiffkitError(
            "fp16 on a CPU is emulated and ~80x slower than fp32; use --precision bf16 or fp32"
        )
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DiffkitError("this GPU has no bf16 support; use --precision fp16 (with loss scaling) or fp32")
    return requested


@dataclass
class Precision:
    """Autocast settings plus the gradient scaler (enabled for fp16 only)."""

    name: str
    device: torch.device
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, requested: str, device: torch.device) -> Precision:
        import torch

        name = resolve_precision(requested, device)
        scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
        return cls(name, device, scaler)

    @property
    def dtype(self) -> torch.dtype | None:
        import torch

        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def fused_adamw(device: torch.device) -> bool:
    """Whether the training AdamW should be the fused implementation on ``device``."""
    return device.type in FUSED_ADAMW_DEVICES


def channels_last_default(device: torch.device) -> bool:
    """channels_last by default on CUDA only (on the development CPU it made bf16 steps slower)."""
    return device.type == "cuda"


def apply_backend_settings(device: torch.device) -> list[str]:
    """CUDA math settings for training: TF32 matmuls/convolutions and cuDNN autotuning.

    Process-wide flags; only a CUDA device sets them (the names set are returned, for tests).
    """
    import torch

    if device.type != "cuda":
        return []
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return ["cuda.matmul.allow_tf32", "cudnn.allow_tf32", "cudnn.benchmark"]
