"""U-Net configuration and named presets.

A config is a frozen dataclass saved as JSON beside every weights file, so a snapshot can be rebuilt
without unpickling anything. Presets hold the resolution-independent choices; ``preset_config`` fixes
the resolution and picks the attention resolutions for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from diffkit.errors import DiffkitError

__all__ = ["PRESETS", "UNetConfig", "UNetPreset", "preset_config"]


@dataclass(frozen=True)
class UNetConfig:
    """Shape of a U-Net. ``attention_resolutions`` are feature-map sizes in pixels (e.g. 16 = 16x16)."""

    channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float
    resolution: int
    in_channels: int = 3
    out_channels: int | None = None  # None: same as in_channels
    head_dim: int = 64  # attention heads = channels // head_dim (at least 1)
    num_classes: int = 0  # > 0: class-conditional, label ``num_classes`` is the null (unconditional) label

    def __post_init__(self) -> None:
        # JSON gives lists; store tuples so configs compare equal and stay hashable.
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        self.validate()

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Feature-map size at each level, from the input down to the bottleneck."""
        return tuple(self.resolution // 2**level for level in range(len(self.channel_mults)))

    def validate(self) -> None:
        problems = []
        if self.channels < 1 or not self.channel_mults or min(self.channel_mults) < 1:
            problems.append("channels and channel_mults must be positive")
        if self.num_res_blocks < 1:
            problems.append("num_res_blocks must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        downsamplings = len(self.channel_mults) - 1
        if self.resolution < 1 or self.resolution % 2**downsamplings:
            problems.append(
                f"resolution {self.resolution} must be divisible by 2^{downsamplings} "
                f"(the U-Net halves it {downsamplings} times)"
            )
        if self.head_dim < 1 or self.in_channels < 1:
            problems.append("head_dim and in_channels must be positive")
        if problems:
            raise DiffkitError("Invalid U-Net config: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        data["attention_resolutions"] = list(self.attention_resolutions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DiffkitError(
                f"Unknown U-Net config keys {unknown}; was the snapshot written by a newer diffkit?"
            )
        return cls(**data)


@dataclass(frozen=True)
class UNetPreset:
    """Resolution-independent part of a config; attention goes at every level of size <= attention_max."""

    channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attention_max: int
    dropout: float
    description: str

    def config(self, resolution: int) -> UNetConfig:
        sizes = [resolution // 2**level for level in range(len(self.channel_mults))]
        attention = tuple(size for size in sizes if size <= self.attention_max)
        # Always attend at least at the bottleneck level (the middle block attends there anyway).
        return UNetConfig(
            channels=self.channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=attention or (sizes[-1],),
            dropout=self.dropout,
            resolution=resolution,
        )


# Parameter counts are independent of resolution (see tests/test_models.py for the exact figures).
PRESETS: dict[str, UNetPreset] = {
    "tiny": UNetPreset(
        channels=32, channel_mults=(1, 2, 2, 4), num_res_blocks=1, attention_max=8, dropout=0.0,
        description="3.3M params, 0.6 GFLOPs/image at 32 px; CPU smoke runs and tests",
    ),
    "small": UNetPreset(
        channels=48, channel_mults=(1, 2, 3, 4), num_res_blocks=2, attention_max=16, dropout=0.1,
        description="13M params, 8.7 GFLOPs/image at 64 px; quick experiments on a consumer GPU",
    ),
    "base": UNetPreset(
        channels=64, channel_mults=(1, 2, 3, 6), num_res_blocks=2, attention_max=16, dropout=0.1,
        description="38M params, 17.6 GFLOPs/image at 64 px (DDPM CIFAR-10 size); default for 64 px",
    ),
}


def preset_config(name: str, resolution: int) -> UNetConfig:
    """The named preset at ``resolution``; a ``DiffkitError`` for unknown names or bad resolutions."""
    if name not in PRESETS:
        raise DiffkitError(f"Unknown model preset {name!r}; choose one of {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    factor = 2 ** (len(preset.channel_mults) - 1)
    if resolution < factor or resolution % factor:
        raise DiffkitError(
            f"Preset {name!r} needs a resolution divisible by {factor} (got {resolution}); try 32 or 64."
        )
    return preset.config(resolution)


def group_count(channels: int) -> int:
    """GroupNorm groups: 32 where the channel count allows it (the DDPM default), else the largest divisor."""
    return math.gcd(32, channels)
