"""U-Net building blocks: time embedding, residual block, self-attention, resampling.

Layout follows DDPM / improved-diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): pre-norm residual
blocks with a FiLM-style scale/shift from the time embedding, and zero-initialised last layers so
every block starts as the identity (training begins from a well-conditioned network).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.models.config import group_count

__all__ = [
    "AttentionBlock",
    "Downsample",
    "ResBlock",
    "TimestepEmbedding",
    "Upsample",
    "sinusoidal_embedding",
]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style embedding of (possibly fractional) timesteps, always computed in float32."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t.float()[:, None] * torch.exp(exponent)[None, :]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP (width ``4 * channels`` in the U-Net)."""

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: Tensor) -> Tensor:
        features = sinusoidal_embedding(t, self.channels)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, then norm modulated by the time embedding (scale/shift), SiLU, dropout, conv."""

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, dropout: float, groups: int | None = None
    ) -> None:
        super().__init__()
        # groups: one count for every norm (UNetConfig.norm_groups); None: gcd(32, width) per norm.
        self.norm1 = nn.GroupNorm(group_count(in_channels) if groups is None else groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(group_count(out_channels) if groups is None else groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels of a feature map, via scaled_dot_product_attention.

    Pixels become tokens as (B, HW, C): q, k and v then have a contiguous last dimension, which the
    fused (flash) SDPA kernels require; a strided layout silently falls back to the slow math path.
    For channels_last inputs the token view costs no copy.
    """

    def __init__(self, channels: int, head_dim: int, groups: int | None = None) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads")
        self.norm = nn.GroupNorm(group_count(channels) if groups is None else groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(tokens).view(batch, height * width, 3, self.heads, channels // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, head_dim)
        # Looked up at call time (not imported by name) so tests can observe every call.
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(batch, height * width, channels))
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (learned, as in DDPM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution (no checkerboard artefacts of transposed convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
