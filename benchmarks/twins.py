"""The peers' twins that several benchmarks share.

- ``diffusers_twin``: diffusers' ``UNet2DModel`` built with a diffkit preset's level widths, blocks per
  level, attention levels, head size and FiLM time conditioning (``resnet_time_scale_shift``), so the
  two networks have the same parameters (within 0.01%) and nearly the same FLOPs (bench_train,
  bench_train_profile, and bench_quality's recipe train it);
- ``Trainer`` / ``build_trainer``: one model's training step (forward, backward, AdamW, MSE against a
  random target) on fixed random inputs, for either network, with the default or the fused AdamW (a flag
  either library's user can set: "diffusers+fused" is diffusers as a competent user runs it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffkit.models.config import UNetConfig
from diffkit.models.stats import flops_per_image
from diffkit.models.unet import UNet

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
# diffkit as `diffkit train` runs it (fused AdamW on CPU and CUDA), against diffusers as its example runs it
SHIPPED = "diffkit+fused"


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
        # diffkit's residual blocks take a FiLM scale and shift from the time embedding; UNet2DModel's
        # "scale_shift" is the same block. Without it the twin had 4% fewer parameters (the peer protocol
        # asks for sizes within 2%; tests/test_bench_peers.py asserts it for every preset).
        resnet_time_scale_shift="scale_shift",
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


class Trainer:
    """One model's training step on fixed random inputs (the data pipeline is not under test)."""

    def __init__(
        self, name: str, model: nn.Module, batch: int, resolution: int, dtype: torch.dtype | None,
        *, channels_last: bool = False, fused: bool = False, compiled: bool = False,
    ) -> None:  # fmt: skip
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.name, self.model, self.dtype = name, model.to(memory_format=memory).train(), dtype
        self.forward = forward_fn(self.model)
        if compiled:
            self.forward = torch.compile(self.forward)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if fused else None)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, resolution, resolution, generator=generator).to(memory_format=memory)
        self.target = torch.randn(batch, 3, resolution, resolution, generator=generator)
        self.t = torch.randint(0, 1000, (batch,), generator=generator).float()
        self.times: list[float] = []
        # this thread's CPU time per step: all of the step's work with one torch thread, and unlike the
        # wall time, not inflated while the process waits for a core on a loaded machine
        self.cpu_times: list[float] = []
        self.warmup_s = 0.0

    def step(self, record: bool) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            out = self.forward(self.x, self.t)
        loss = F.mse_loss(out.float(), self.target)
        loss.backward()
        self.optimizer.step()
        if record:
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.thread_time() - cpu_start)


def build_trainer(kind: str, config: UNetConfig, batch: int, dtype: torch.dtype | None) -> Trainer:
    """``kind`` is "diffkit" or "diffusers" plus optional "+channels_last", "+fused", "+compile"."""
    base, *levers = kind.split("+")
    torch.manual_seed(0)
    model = UNet(config) if base == "diffkit" else diffusers_twin(config)
    return Trainer(kind, model, batch, config.resolution, dtype, channels_last="channels_last" in levers,
                   fused="fused" in levers, compiled="compile" in levers)  # fmt: skip
