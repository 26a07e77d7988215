"""diffkit's U-Net and DDIM as diffusers' ``UNet2DModel`` and ``DDIMScheduler``: configs and weight names.

The two networks are the same DDPM layout (Ho et al. 2020), so the export is a renaming, never an
approximation:

- ``ResBlock`` is ``ResnetBlock2D`` with ``resnet_time_scale_shift="scale_shift"``: norm1, SiLU, conv1,
  ``time_emb_proj(silu(temb))`` chunked into (scale, shift), ``norm2 * (1 + scale) + shift``, SiLU,
  dropout, conv2, a 1x1 ``conv_shortcut`` when the width changes;
- ``AttentionBlock``'s fused ``qkv`` Linear holds q, k and v as rows ``[0:C]``, ``[C:2C]``, ``[2C:3C]``
  (its output is viewed as ``(3, heads, head_dim)``), which become ``to_q``, ``to_k``, ``to_v``;
  ``proj`` is ``to_out.0``; heads split each of them the same way in both;
- a level that attends is an ``AttnDownBlock2D`` / ``AttnUpBlock2D`` (attention after every resnet);
  the middle is ``UNetMidBlock2D`` (resnet, attention, resnet; its attention norm needs
  ``attn_norm_num_groups`` under scale_shift);
- the time embedding is ``Timesteps(flip_sin_to_cos=True, freq_shift=0)`` (cos first, frequencies
  ``exp(-ln(10000) i / half)``) and ``TimestepEmbedding`` (linear, SiLU, linear);
- class labels: ``num_class_embeds = num_classes + 1``, the last one the null label.

diffusers has one GroupNorm group count, one attention head size and a first level as wide as its
input conv. Every diffkit preset has them too (``UNetConfig.norm_groups``, one ``head_dim`` that divides
every attending width); a config that differs anywhere, such as a small run from before those existed,
is refused (``unsupported_reasons``), not rounded.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.models.blocks import AttentionBlock
from diffkit.models.config import UNetConfig
from diffkit.models.unet import UNet

__all__ = [
    "DIFFUSERS_VERSION",
    "model_index",
    "scheduler_config",
    "unet_config",
    "unet_state_dict",
    "unsupported_reasons",
]

# The diffusers release the export was checked against (tests/test_export.py loads it with the installed
# one); diffusers reads it only to say which version wrote the files.
DIFFUSERS_VERSION = "0.42.1"
NORM_EPS = 1e-5  # torch's GroupNorm default, which diffkit's blocks use
PREDICTION_TYPES = {"v": "v_prediction", "eps": "epsilon"}
# diffusers' "squaredcos_cap_v2" (betas_for_alpha_bar, max_beta 0.999) equals diffkit's cosine betas in
# float32, where diffusers keeps them. Its float32 "linear" linspace differs from diffkit's float64 one
# in the last bit of about a third of the steps, so linear runs carry their betas (trained_betas).
BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}

# diffkit name prefix -> diffusers prefix (the first rule that matches renames the key).
_PREFIXES = [
    (re.compile(r"^down\.(\d+)\.(\d+)\.res\."), r"down_blocks.\1.resnets.\2."),
    (re.compile(r"^down\.(\d+)\.(\d+)\.attention\."), r"down_blocks.\1.attentions.\2."),
    (re.compile(r"^downsample\.(\d+)\.conv\."), r"down_blocks.\1.downsamplers.0.conv."),
    (re.compile(r"^middle\.(\d+)\.res\."), r"mid_block.resnets.\1."),
    (re.compile(r"^middle\.0\.attention\."), r"mid_block.attentions.0."),
    (re.compile(r"^up\.(\d+)\.(\d+)\.res\."), r"up_blocks.\1.resnets.\2."),
    (re.compile(r"^up\.(\d+)\.(\d+)\.attention\."), r"up_blocks.\1.attentions.\2."),
    (re.compile(r"^upsample\.(\d+)\.conv\."), r"up_blocks.\1.upsamplers.0.conv."),
    (re.compile(r"^time_embedding\.mlp\.0\."), "time_embedding.linear_1."),
    (re.compile(r"^time_embedding\.mlp\.2\."), "time_embedding.linear_2."),
    (re.compile(r"^label_embedding\."), "class_embedding."),
    (re.compile(r"^input_conv\."), "conv_in."),
    (re.compile(r"^output_norm\."), "conv_norm_out."),
    (re.compile(r"^output_conv\."), "conv_out."),
]
# Layer names inside a block: ResBlock's and AttentionBlock's -> ResnetBlock2D's and Attention's.
_LAYERS = {"embed": "time_emb_proj", "skip": "conv_shortcut", "norm": "group_norm", "proj": "to_out.0"}


def _level_blocks(config: UNetConfig, attention: str, plain: str, sizes: tuple[int, ...]) -> list[str]:
    return [attention if size in config.attention_resolutions else plain for size in sizes]


def _group_counts(model: UNet) -> set[int]:
    return {module.num_groups for module in model.modules() if isinstance(module, nn.GroupNorm)}


def _head_dims(model: UNet) -> set[int]:
    return {
        module.qkv.in_features // module.heads
        for module in model.modules()
        if isinstance(module, AttentionBlock)
    }


def _meta_model(config: UNetConfig) -> UNet:
    with torch.device("meta"):  # the layer list without allocating weights
        return UNet(config)


def unsupported_reasons(config: UNetConfig) -> list[str]:
    """Why ``UNet2DModel`` cannot hold this U-Net exactly; empty when it can."""
    reasons = []
    model = _meta_model(config)
    groups = sorted(_group_counts(model))
    if len(groups) > 1:
        reasons.append(
            f"its GroupNorm layers use {', '.join(map(str, groups))} groups (a config without norm_groups "
            f"gets 32 where the width allows, else gcd(32, width); channels={config.channels}), "
            "UNet2DModel one count for all"
        )
    head_dims = sorted(_head_dims(model))
    if len(head_dims) > 1:
        reasons.append(
            f"its attention heads have {', '.join(map(str, head_dims))} channels at different levels "
            f"(width // head_dim heads, head_dim={config.head_dim}, and not every attending width is a "
            "multiple of it), UNet2DModel one size"
        )
    if config.channel_mults[0] != 1:
        reasons.append(
            f"its first level is {config.channel_mults[0]}x as wide as its input conv; in UNet2DModel they "
            "are equal"
        )
    if config.in_channels != config.output_channels:
        reasons.append("its input and output channels differ")
    return reasons


def unet_config(config: UNetConfig) -> dict[str, Any]:
    """``unet/config.json``: every ``UNet2DModel`` argument, so no diffusers default decides anything."""
    model = _meta_model(config)
    (groups,) = _group_counts(model)
    (head_dim,) = _head_dims(model)  # the middle block always attends, so there is one
    sizes = config.level_resolutions
    return {
        "_class_name": "UNet2DModel",
        "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": config.resolution,
        "in_channels": config.in_channels,
        "out_channels": config.output_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "time_embedding_dim": None,  # 4 x block_out_channels[0], as diffkit's 4 x channels
        "freq_shift": 0,
        "flip_sin_to_cos": True,
        "down_block_types": _level_blocks(config, "AttnDownBlock2D", "DownBlock2D", sizes),
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": _level_blocks(config, "AttnUpBlock2D", "UpBlock2D", sizes[::-1]),
        "block_out_channels": [config.channels * mult for mult in config.channel_mults],
        "layers_per_block": config.num_res_blocks,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": config.dropout,
        "act_fn": "silu",
        "attention_head_dim": head_dim,
        "norm_num_groups": groups,
        "attn_norm_num_groups": groups,
        "norm_eps": NORM_EPS,
        "resnet_time_scale_shift": "scale_shift",
        "add_attention": True,
        "class_embed_type": None,
        "num_class_embeds": config.num_classes + 1 if config.num_classes else None,
        "num_train_timesteps": None,
    }


def _rename(name: str) -> tuple[str, str]:
    """(diffusers prefix, the rest): ``down.1.0.res.embed.weight`` -> ``down_blocks.1.resnets.0.``,
    ``time_emb_proj.weight``."""
    for pattern, replacement in _PREFIXES:
        match = pattern.match(name)
        if match:
            layer, _, rest = name[match.end() :].partition(".")
            tail = f"{_LAYERS.get(layer, layer)}.{rest}" if rest else layer
            return match.expand(replacement), tail
    raise ValueError(f"no diffusers name for U-Net tensor {name!r}")


def unet_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffkit U-Net tensors under diffusers' names, with each fused qkv split into to_q, to_k, to_v."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        prefix, tail = _rename(name)
        if tail.startswith("qkv."):
            kind = tail.removeprefix("qkv.")
            for part, chunk in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0), strict=True):
                out[f"{prefix}{part}.{kind}"] = chunk.contiguous()
        else:
            out[prefix + tail] = tensor.contiguous()
    return out


def scheduler_config(diffusion: GaussianDiffusion) -> dict[str, Any]:
    """``scheduler/scheduler_config.json``: the DDIM that diffkit's ``--sampler ddim`` (eta 0) runs.

    Trailing spacing and ``set_alpha_to_one`` (the last step lands on abar = 1) as diffkit's sampler;
    ``clip_sample`` as diffkit's DDIM, which also re-derives eps from the clipped x0: pass
    ``use_clipped_model_output=True`` to ``step`` (or the pipeline) for exactly that update.
    """
    schedule = diffusion.schedule
    steps = schedule.num_timesteps
    config: dict[str, Any] = {
        "_class_name": "DDIMScheduler",
        "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": steps,
        "beta_schedule": BETA_SCHEDULES[schedule.name],
        # diffusers' linear betas run from beta_start to beta_end; diffkit scales DDPM's by 1000 / T
        "beta_start": 1e-4 * 1000 / steps,
        "beta_end": 0.02 * 1000 / steps,
        "trained_betas": None,
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": PREDICTION_TYPES[diffusion.prediction],
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "sample_max_value": 1.0,
        "timestep_spacing": "trailing",
        "rescale_betas_zero_snr": False,
    }
    if schedule.name != "cosine":
        config["trained_betas"] = [float(beta) for beta in schedule.betas.tolist()]
    return config


def model_index() -> dict[str, Any]:
    """``model_index.json``: what ``DDIMPipeline.from_pretrained(OUT)`` assembles."""
    return {
        "_class_name": "DDIMPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    }
