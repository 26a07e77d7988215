"""The CUDA code paths, run on the CPU wherever PyTorch allows, so only the kernel dispatch differs.

fp16 autocast with the GradScaler (an inf-gradient skip, then a bit-exact resume), ``torch.compile``
(inductor's CPU backend), the batcher's "whole set on the device" path, the fused AdamW choice, and the
TF32 / channels_last settings (taken for a CUDA device; no kernel runs for those).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffkit import device as dev
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.train.batcher import DeviceBatcher
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

FAST: dict[str, Any] = dict(
    preset="tiny",
    resolution=16,
    batch_size=4,
    device="cpu",
    progress=False,
    report=False,
    sample_every_kimg=0.0,
    sample_grid=2,
    sample_steps=2,
    log_every_steps=1,
    warmup_kimg=0.02,
    seed=2,
)


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / "state-latest.pt", weights_only=True)


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    flat = {f"model.{k}": v for k, v in state["model"].items()} | {
        f"ema.{k}": v for k, v in state["ema"].items()
    }
    for index, moments in state["optimizer"]["state"].items():
        flat |= {f"opt.{index}.{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)}
    return flat


def test_fp16_grad_scaler_skips_an_inf_step_and_resumes_bit_exactly(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2's loss is scaled so its fp16 gradients overflow: the GradScaler skips that update and
    halves its scale (the guard does not count it); 4 steps in one go == 2 + --resume 2, bit for bit."""
    monkeypatch.setattr(dev, "CPU_FP16_ALLOWED", True)
    real_loss = GaussianDiffusion.loss
    calls = {"n": 0}

    def overflowing_loss(self: GaussianDiffusion, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real_loss(self, *args, **kwargs)
        return loss * 1e30 if calls["n"] == 2 else loss  # finite in fp32, inf gradients in fp16

    monkeypatch.setattr(GaussianDiffusion, "loss", overflowing_loss)
    options = FAST | dict(precision="fp16", resolution=8, batch_size=2)
    whole = train(TrainConfig(data=faces, out=tmp_path / "whole", steps=4, **options))
    calls["n"] = 0
    train(TrainConfig(data=faces, out=tmp_path / "split", steps=2, **options))
    calls["n"] = 10  # the resumed half must not overflow again
    resumed = train(TrainConfig(data=faces, out=tmp_path / "split", steps=4, resume=True, **options))
    assert whole.precision == "fp16" and resumed.step == 4 and whole.skipped_steps == 0
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "split")
    assert a["scaler"]["scale"] == b["scaler"]["scale"] == 2.0**15  # 2**16 halved once by the skip
    steps_taken = {float(m["step"]) for m in a["optimizer"]["state"].values()}
    assert steps_taken == {3.0}  # 4 steps, one update skipped
    tensors_a, tensors_b = _tensors(a), _tensors(b)
    assert [k for k in tensors_a if not torch.equal(tensors_a[k], tensors_b[k])] == []
    stats = [json.loads(line) for line in (tmp_path / "whole" / "stats.jsonl").read_text().splitlines()]
    assert [r["loss_scale"] for r in stats] == [2.0**16, 2.0**15, 2.0**15, 2.0**15]


def test_fp16_on_a_cpu_is_refused_for_users() -> None:
    with pytest.raises(dev.DiffkitError, match="fp16 on a CPU"):
        dev.resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.slow
def test_compile_on_cpu_trains_like_eager(faces: Path, tmp_path: Path) -> None:
    """``--compile`` through inductor's CPU backend: same losses as eager within float tolerance."""
    options = FAST | dict(precision="fp32", resolution=8, batch_size=2, preset="tiny")
    eager = train(TrainConfig(data=faces, out=tmp_path / "eager", steps=2, **options))
    compiled = train(TrainConfig(data=faces, out=tmp_path / "compiled", steps=2, compile=True, **options))
    assert compiled.step == eager.step == 2

    def losses(run: str) -> list[float]:
        return [
            json.loads(line)["loss"] for line in (tmp_path / run / "stats.jsonl").read_text().splitlines()
        ]

    assert losses("compiled") == pytest.approx(losses("eager"), rel=1e-4, abs=1e-6)


class _Images:
    """A stand-in for the image cache: ``images`` (N, H, W, 3) uint8."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)


def test_batcher_resident_and_host_paths_give_the_same_batches() -> None:
    """The "whole set on the device" path (resident) and the host-gather path, both on the CPU."""
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    resident = DeviceBatcher(_Images(images), 4, torch.device("cpu"), 5, labels=labels, resident=True)
    host = DeviceBatcher(_Images(images), 4, torch.device("cpu"), 5, labels=labels, resident=False)
    assert resident.resident and not host.resident
    assert host._images is host._host_images and resident._images.data_ptr() == images.ctypes.data  # no copy
    for _ in range(6):  # runs over several epochs, one batch crossing an epoch boundary
        (x_a, y_a), (x_b, y_b) = resident.next_batch(), host.next_batch()
        assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
    assert resident.state_dict() == host.state_dict()


def test_batcher_keeps_the_set_on_a_gpu_only_when_it_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = DeviceBatcher.__new__(DeviceBatcher)
    batcher.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert batcher._fits_on_device(250) and not batcher._fits_on_device(251)
    batcher.device = torch.device("cpu")
    assert batcher._fits_on_device(10**12)


def test_fused_adamw_is_chosen_per_device_and_steps_on_cpu() -> None:
    assert dev.fused_adamw(torch.device("cpu")) and dev.fused_adamw(torch.device("cuda"))
    assert not dev.fused_adamw(torch.device("mps"))
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(2)]
    copies = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    fused = torch.optim.AdamW(weights, lr=1e-2, fused=True)
    plain = torch.optim.AdamW(copies, lr=1e-2, foreach=False)
    for _ in range(3):
        for group in (weights, copies):
            for w in group:
                w.grad = torch.ones_like(w) * w.detach().sin()
        fused.step()
        plain.step()
    for a, b in zip(weights, copies, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_cuda_backend_settings_are_taken_for_a_cuda_device() -> None:
    """TF32 and cuDNN autotuning on CUDA only (flags only: no kernel runs), channels_last by default."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = cudnn.benchmark = False
        assert dev.apply_backend_settings(torch.device("cpu")) == []
        assert not matmul.allow_tf32 and not cudnn.allow_tf32 and not cudnn.benchmark
        taken = dev.apply_backend_settings(torch.device("cuda", 0))
        assert taken == ["cuda.matmul.allow_tf32", "cudnn.allow_tf32", "cudnn.benchmark"]
        assert matmul.allow_tf32 and cudnn.allow_tf32 and cudnn.benchmark
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = saved
    assert dev.channels_last_default(torch.device("cuda")) and not dev.channels_last_default(
        torch.device("cpu")
    )


def test_channels_last_training_on_cpu_matches_contiguous(faces: Path, tmp_path: Path) -> None:
    """The CUDA default layout (channels_last) run on the CPU: same losses within float rounding."""
    options = FAST | dict(precision="fp32")
    plain = train(TrainConfig(data=faces, out=tmp_path / "plain", steps=2, channels_last=False, **options))
    last = train(TrainConfig(data=faces, out=tmp_path / "last", steps=2, channels_last=True, **options))
    assert plain.final_loss == pytest.approx(last.final_loss, rel=1e-4)
