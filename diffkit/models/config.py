"""U-Net configuration and named presets.

A config is a frozen dataclass saved as JSON beside every weights file, so a snapshot can be rebuilt
without unpickling anything. Presets hold the resolution-independent choices; ``preset_config`` fixes
the resolution and picks the attention resolutions for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from diffkit.errors import DiffkitError

__all__ = [
    "MAX_PARAMETERS",
    "MAX_RESOLUTION",
    "PRESETS",
    "PresetName",
    "UNetConfig",
    "UNetPreset",
    "estimate_parameters",
    "preset_config",
]

# A config from a snapshot or config.json is data, not code: one with channels=4000 or a million blocks
# would otherwise allocate tens of GB (or hang) before failing. Far above any preset (38M params, 64 px).
MAX_PARAMETERS = 2_000_000_000
MAX_RESOLUTION = 4096
# Per-field bounds, checked first so that the parameter count below is a short loop of small numbers.
_FIELD_LIMITS = {
    "channels": 1 << 16,
    "num_res_blocks": 64,
    "head_dim": 1 << 16,
    "in_channels": 4096,
    "num_classes": 1 << 20,
}
_MAX_MULT, _MAX_LEVELS = 1 << 10, 16
_INT_FIELDS = ("channels", "num_res_blocks", "resolution", "in_channels", "head_dim", "num_classes")


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
    # GroupNorm groups in every layer. None: 32 where a layer's width allows, else gcd(32, width), the
    # rule of every config written before this field existed (their snapshots must rebuild the network
    # they were trained as). One count for all layers is what diffusers' UNet2DModel can hold.
    norm_groups: int | None = None

    def __post_init__(self) -> None:
        _check_types(self)
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
        if self.num_classes < 0 or (self.out_channels is not None and self.out_channels < 1):
            problems.append("num_classes must be >= 0 and out_channels positive")
        # Every normalised width (level widths and their concatenations with skips) is a multiple of
        # ``channels``, so dividing ``channels`` is exactly the condition for every layer.
        if self.norm_groups is not None and (self.norm_groups < 1 or self.channels % self.norm_groups):
            problems.append(f"norm_groups {self.norm_groups} must be a positive divisor of channels")
        problems += self._size_problems()
        if problems:
            raise DiffkitError("Invalid U-Net config: " + "; ".join(problems) + ".")
        params = estimate_parameters(self)
        if params > MAX_PARAMETERS:
            raise DiffkitError(
                f"Invalid U-Net config: it has {params / 1e9:.1f}B parameters, more than the "
                f"{MAX_PARAMETERS / 1e9:.0f}B diffkit builds "
                f"({params * 4 / 2**30:.0f} GiB of fp32 weights alone)."
            )
        for width in self._attention_widths():
            heads = max(1, width // self.head_dim)
            if width % heads:
                raise DiffkitError(
                    f"Invalid U-Net config: {width} channels do not split into {heads} attention heads "
                    f"of about head_dim={self.head_dim}."
                )

    def _size_problems(self) -> list[str]:
        problems = []
        for name, limit in _FIELD_LIMITS.items():
            if getattr(self, name) > limit:
                problems.append(f"{name} {getattr(self, name)} is above the limit of {limit}")
        if self.out_channels is not None and self.out_channels > _FIELD_LIMITS["in_channels"]:
            problems.append(
                f"out_channels {self.out_channels} is above the limit of {_FIELD_LIMITS['in_channels']}"
            )
        if len(self.channel_mults) > _MAX_LEVELS or max(self.channel_mults, default=1) > _MAX_MULT:
            problems.append(f"channel_mults allows at most {_MAX_LEVELS} levels of at most {_MAX_MULT}x")
        if self.resolution > MAX_RESOLUTION:
            problems.append(f"resolution {self.resolution} is above the limit of {MAX_RESOLUTION} px")
        return problems

    def _attention_widths(self) -> set[int]:
        widths = {
            self.channels * mult
            for mult, size in zip(self.channel_mults, self.level_resolutions, strict=True)
            if size in self.attention_resolutions
        }
        return widths | {self.channels * self.channel_mults[-1]}  # the bottleneck always attends

    def groups(self, width: int) -> int:
        """GroupNorm groups of a layer ``width`` channels wide."""
        return group_count(width) if self.norm_groups is None else self.norm_groups

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channel_mults"] = list(self.channel_mults)
        data["attention_resolutions"] = list(self.attention_resolutions)
        if self.norm_groups is None:  # the JSON of configs before the field: older diffkits still read it
            del data["norm_groups"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        if not isinstance(data, dict):
            raise DiffkitError(f"Invalid U-Net config: expected a JSON object, got {type(data).__name__}.")
        fields = dataclasses.fields(cls)
        known = {field.name for field in fields}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DiffkitError(
                f"Unknown U-Net config keys {unknown}; was the snapshot written by a newer diffkit?"
            )
        required = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
        if required:
            raise DiffkitError(f"Invalid U-Net config: missing keys {required}.")
        return cls(**data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(config: UNetConfig) -> None:
    """Wrong JSON types (a string for channels, a number for channel_mults) as one clear error."""
    problems = [f"{name} must be an integer" for name in _INT_FIELDS if not _is_int(getattr(config, name))]
    for name in ("out_channels", "norm_groups"):
        value = getattr(config, name)
        if value is not None and not _is_int(value):
            problems.append(f"{name} must be an integer or null")
    for name in ("channel_mults", "attention_resolutions"):
        value = getattr(config, name)
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
            problems.append(f"{name} must be a list of integers")
    if not isinstance(config.dropout, (int, float)) or isinstance(config.dropout, bool):
        problems.append("dropout must be a number")
    if problems:
        raise DiffkitError("Invalid U-Net config: " + "; ".join(problems) + ".")


def estimate_parameters(config: UNetConfig) -> int:
    """The U-Net's parameter count from its config alone, without building it (exactly ``UNet``'s count).

    Mirrors the layer list of :class:`~diffkit.models.unet.UNet`, so it answers "how big would this be"
    for a config read from a file before anything is allocated; tests check it against the real model.
    """
    ch, embed = config.channels, 4 * config.channels

    def conv(c_in: int, c_out: int, k: int = 3) -> int:
        return c_in * c_out * k * k + c_out

    def linear(c_in: int, c_out: int) -> int:
        return c_in * c_out + c_out

    def res(c_in: int, c_out: int) -> int:
        skip = 0 if c_in == c_out else conv(c_in, c_out, 1)
        return 2 * c_in + conv(c_in, c_out) + linear(embed, 2 * c_out) + 2 * c_out + conv(c_out, c_out) + skip

    def attention(c: int) -> int:
        return 2 * c + linear(c, 3 * c) + linear(c, c)

    def stage(c_in: int, c_out: int, size: int) -> int:
        return res(c_in, c_out) + (attention(c_out) if size in config.attention_resolutions else 0)

    total = linear(ch, embed) + linear(embed, embed) + conv(config.in_channels, ch)
    if config.num_classes:
        total += (config.num_classes + 1) * embed
    sizes, levels = config.level_resolutions, len(config.channel_mults)
    skips, current = [ch], ch
    for level, mult in enumerate(config.channel_mults):
        for _ in range(config.num_res_blocks):
            total += stage(current, ch * mult, sizes[level])
            current = ch * mult
            skips.append(current)
        if level < levels - 1:
            total += conv(current, current)  # downsample
            skips.append(current)
    total += 2 * res(current, current) + attention(current)  # middle
    for level in reversed(range(levels)):
        width = ch * config.channel_mults[level]
        for _ in range(config.num_res_blocks + 1):
            total += stage(current + skips.pop(), width, sizes[level])
            current = width
        if level > 0:
            total += conv(current, current)  # upsample
    return total + 2 * current + conv(current, config.output_channels)


@dataclass(frozen=True)
class UNetPreset:
    """Resolution-independent part of a config; attention goes at every level of size <= attention_max.

    Every preset has one GroupNorm group count and one attention head size in all its layers, so that
    diffusers' ``UNet2DModel`` (one ``norm_num_groups``, one ``attention_head_dim``) holds it exactly.
    """

    channels: int
    channel_mults: tuple[int, ...]
    num_res_blocks: int
    attention_max: int
    dropout: float
    description: str
    head_dim: int = 64  # the largest head size; see ``config``
    norm_groups: int | None = None  # None: gcd(32, width), 32 everywhere when all widths are multiples of 32

    def config(self, resolution: int) -> UNetConfig:
        sizes = [resolution // 2**level for level in range(len(self.channel_mults))]
        # Always attend at least at the bottleneck level (the middle block attends there anyway).
        attention = tuple(size for size in sizes if size <= self.attention_max) or (sizes[-1],)
        return UNetConfig(
            channels=self.channels,
            channel_mults=self.channel_mults,
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=attention,
            dropout=self.dropout,
            resolution=resolution,
            # tiny at 8 px keeps one 32-channel head beside 64-channel ones (its trained results were
            # measured so; it is a test-only size), so it alone does not export to diffusers.
            head_dim=self.head_dim,
            norm_groups=self.norm_groups,
        )


# Parameter counts are independent of resolution (see tests/test_models.py for the exact figures).
PRESETS: dict[str, UNetPreset] = {
    "tiny": UNetPreset(
        channels=32, channel_mults=(1, 2, 2, 4), num_res_blocks=1, attention_max=8, dropout=0.0,
        description="3.3M params, 0.6 GFLOPs/image at 32 px; CPU smoke runs and tests",
    ),
    # Widths 48..192 are multiples of 16 and 48, not of 32 and 64: 16 groups and 48-channel heads
    # (1, 2, 3, 4 heads at 48, 96, 144, 192) throughout. Before norm_groups existed it had gcd(32, width)
    # groups (16 or 32) and width // 64 heads (of 48 to 96 channels); those runs keep their config.
    "small": UNetPreset(
        channels=48, channel_mults=(1, 2, 3, 4), num_res_blocks=2, attention_max=16, dropout=0.1,
        description="13M params, 8.7 GFLOPs/image at 64 px; quick experiments on a consumer GPU",
        head_dim=48, norm_groups=16,
    ),
    "base": UNetPreset(
        channels=64, channel_mults=(1, 2, 3, 6), num_res_blocks=2, attention_max=16, dropout=0.1,
        description="38M params, 17.6 GFLOPs/image at 64 px (DDPM CIFAR-10 size); default for 64 px",
    ),
}  # fmt: skip


class PresetName(str, Enum):
    """The ``--preset`` choices, one per entry of ``PRESETS`` (the CLI shows them)."""

    tiny = "tiny"
    small = "small"
    base = "base"


def preset_config(
    name: str, resolution: int, *, channels: int | None = None, num_res_blocks: int | None = None
) -> UNetConfig:
    """The named preset at ``resolution``; a ``DiffkitError`` for unknown names or bad resolutions.

    ``channels`` (the base width) and ``num_res_blocks`` (residual blocks per level, the depth) replace
    the preset's when given, keeping everything else (channel multipliers, attention, GroupNorm groups,
    head size); a width the preset's groups or heads cannot split fails here, with the reason.
    """
    if name not in PRESETS:
        raise DiffkitError(f"Unknown model preset {name!r}; choose one of {', '.join(PRESETS)}.")
    preset = PRESETS[name]
    for option, value in (("channels", channels), ("num_res_blocks", num_res_blocks)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DiffkitError(f"Invalid U-Net config: {option} must be a positive integer (got {value!r}).")
    if channels is not None:
        preset = dataclasses.replace(preset, channels=channels)
    if num_res_blocks is not None:
        preset = dataclasses.replace(preset, num_res_blocks=num_res_blocks)
    factor = 2 ** (len(preset.channel_mults) - 1)
    if resolution < factor or resolution % factor:
        raise DiffkitError(
            f"Preset {name!r} needs a resolution divisible by {factor} (got {resolution}); try 32 or 64."
        )
    return preset.config(resolution)


def group_count(channels: int) -> int:
    """GroupNorm groups of a config without ``norm_groups``: 32 where the width allows it (the DDPM
    default), else the largest divisor of 32 that divides it."""
    return math.gcd(32, channels)
