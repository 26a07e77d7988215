"""The diffusion U-Net: input conv, down path with skips, middle block, up path, output conv.

``UNet(config)(x, t)`` maps noisy images ``x`` (NCHW) and timesteps ``t`` (float, [B], in [0, 1000))
to a tensor of the same shape; what it predicts (epsilon, v) is the diffusion module's business.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffkit.models.blocks import AttentionBlock, Downsample, ResBlock, TimestepEmbedding, Upsample, zero_init
from diffkit.models.config import UNetConfig

__all__ = ["UNet"]


class _Stage(nn.Module):
    """A residual block optionally followed by self-attention (one U-Net "layer")."""

    def __init__(self, res: ResBlock, attention: AttentionBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attention = attention

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        x = self.res(x, embedding)
        return x if self.attention is None else self.attention(x)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        embed_dim = 4 * ch
        self.time_embedding = TimestepEmbedding(ch, embed_dim)
        # One extra label for "no label" so classifier-free guidance can drop the condition.
        self.label_embedding = nn.Embedding(config.num_classes + 1, embed_dim) if config.num_classes else None

        groups = config.norm_groups  # None: each norm gets gcd(32, its width) (configs before the field)

        def stage(c_in: int, c_out: int, size: int) -> _Stage:
            attend = size in config.attention_resolutions
            attention = AttentionBlock(c_out, config.head_dim, groups) if attend else None
            return _Stage(ResBlock(c_in, c_out, embed_dim, config.dropout, groups), attention)

        self.input_conv = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [ch]
        current = ch
        sizes = config.level_resolutions
        for level, mult in enumerate(config.channel_mults):
            blocks = nn.ModuleList()
            for _ in range(config.num_res_blocks):
                blocks.append(stage(current, ch * mult, sizes[level]))
                current = ch * mult
                skip_channels.append(current)
            self.down.append(blocks)
            last = level == len(config.channel_mults) - 1
            self.downsample.append(nn.Identity() if last else Downsample(current))
            if not last:
                skip_channels.append(current)

        # The bottleneck always attends: it is the cheapest place for global context.
        middle_attention = AttentionBlock(current, config.head_dim, groups)
        self.middle = nn.ModuleList(
            [
                _Stage(ResBlock(current, current, embed_dim, config.dropout, groups), middle_attention),
                _Stage(ResBlock(current, current, embed_dim, config.dropout, groups), None),
            ]
        )

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(config.channel_mults))):
            blocks = nn.ModuleList()
            width = ch * config.channel_mults[level]
            for _ in range(config.num_res_blocks + 1):  # one more than down: it also eats the downsample skip
                blocks.append(stage(current + skip_channels.pop(), width, sizes[level]))
                current = width
            self.up.append(blocks)
            self.upsample.append(Upsample(current) if level > 0 else nn.Identity())

        self.output_norm = nn.GroupNorm(config.groups(current), current)
        self.output_conv = zero_init(nn.Conv2d(current, config.output_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        embedding = self.time_embedding(t)
        if self.label_embedding is not None:
            if labels is None:  # unconditional: the null label
                labels = torch.full((x.shape[0],), self.config.num_classes, device=x.device, dtype=torch.long)
            embedding = embedding + self.label_embedding(labels)

        h = self.input_conv(x)
        skips = [h]
        for blocks, downsample in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, embedding)
                skips.append(h)
            if not isinstance(downsample, nn.Identity):
                h = downsample(h)
                skips.append(h)
        for block in self.middle:
            h = block(h, embedding)
        for blocks, upsample in zip(self.up, self.upsample, strict=True):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            h = upsample(h)
        return self.output_conv(F.silu(self.output_norm(h)))
