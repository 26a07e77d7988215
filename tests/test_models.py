"""The U-Net: shapes, preset sizes, attention placement, gradients, time conditioning, FLOP count."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffkit.errors import DiffkitError
from diffkit.models.blocks import AttentionBlock
from diffkit.models.config import PRESETS, UNetConfig, preset_config
from diffkit.models.stats import count_parameters, flops_per_image
from diffkit.models.unet import UNet

TINY16 = UNetConfig(
    channels=16,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    dropout=0.0,
    resolution=16,
    head_dim=16,
)


# config.json of a small run at 32 px written before UNetConfig had norm_groups (and small had head_dim 48).
OLD_SMALL32 = {
    "channels": 48, "channel_mults": [1, 2, 3, 4], "num_res_blocks": 2, "attention_resolutions": [16, 8, 4],
    "dropout": 0.1, "resolution": 32, "in_channels": 3, "out_channels": None, "head_dim": 64,
    "num_classes": 0,
}  # fmt: skip


def norms_and_heads(config: UNetConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(channels, groups) of every GroupNorm and (channels, heads) of every attention layer, in order."""
    with torch.device("meta"):
        model = UNet(config)
    norms = [(m.num_channels, m.num_groups) for m in model.modules() if isinstance(m, nn.GroupNorm)]
    heads = [(m.qkv.in_features, m.heads) for m in model.modules() if isinstance(m, AttentionBlock)]
    return norms, heads


def build(config: UNetConfig, seed: int = 0, perturb: bool = True) -> UNet:
    """A model whose zero-initialised layers are given small random weights.

    At init the output conv is zero (so the output is zero whatever the input); perturbing it
    makes tests of conditioning and gradients meaningful from the first step.
    """
    torch.manual_seed(seed)
    model = UNet(config)
    if perturb:
        with torch.no_grad():
            for parameter in model.parameters():
                if not parameter.any():
                    parameter.normal_(0.0, 0.02)
    return model


def test_output_shape_and_zero_init() -> None:
    for config in (TINY16, preset_config("tiny", 32)):
        model = build(config, perturb=False)
        x = torch.randn(2, 3, config.resolution, config.resolution)
        out = model(x, torch.tensor([3.0, 999.5]))
        assert out.shape == x.shape
        assert not out.any(), "zero-initialised output conv: the untrained U-Net predicts 0"
    assert build(TINY16)(torch.randn(1, 3, 16, 16), torch.tensor(5.0)).shape == (1, 3, 16, 16)


def test_preset_parameter_counts() -> None:
    counts = {}
    for name in PRESETS:
        with torch.device("meta"):
            counts[name] = count_parameters(UNet(preset_config(name, 64)))
    assert counts == {"tiny": 3_292_035, "small": 12_967_251, "base": 38_415_427}
    assert abs(counts["base"] / 36e6 - 1) < 0.1  # "about 36M", the DDPM CIFAR-10 size
    assert 2e6 < counts["tiny"] < 9e6 and abs(counts["small"] / 12e6 - 1) < 0.1


def test_count_parameters_counts_trainable_only() -> None:
    model = UNet(TINY16)
    total = sum(p.numel() for p in model.parameters())
    model.input_conv.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.input_conv.weight.numel()


def test_attention_runs_at_configured_resolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    config = preset_config("small", 32)  # attention at 16, 8, 4 of levels 32, 16, 8, 4
    assert config.attention_resolutions == (16, 8, 4)
    lengths: list[int] = []
    original = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        lengths.append(q.shape[-2])
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        build(config)(torch.randn(1, 3, 32, 32), torch.tensor([10.0]))
    per_level = config.num_res_blocks + (config.num_res_blocks + 1)  # down blocks + up blocks
    expected = sorted([16 * 16] * per_level + [8 * 8] * per_level + [4 * 4] * per_level + [4 * 4])  # + middle
    assert sorted(lengths) == expected
    assert sum(isinstance(m, AttentionBlock) for m in build(config).modules()) == len(expected)


def test_every_parameter_gets_a_gradient_after_a_few_steps() -> None:
    # Zero-init output layers block gradients to earlier layers at step 0 (by design); after a few
    # optimiser steps every parameter must receive a non-zero, finite gradient.
    model = build(TINY16, perturb=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, target = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    t = torch.tensor([1.0, 250.0, 500.0, 999.0])
    for _ in range(3):
        optimizer.zero_grad()
        F.mse_loss(model(x, t), target).backward()
        optimizer.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_time_embedding_changes_the_output() -> None:
    model = build(TINY16).eval()
    x = torch.randn(1, 3, 16, 16).expand(3, -1, -1, -1)
    with torch.no_grad():
        out = model(x, torch.tensor([0.0, 0.5, 900.0]))
    assert (out[0] - out[1]).abs().max() > 1e-4  # fractional timesteps are distinguished too
    assert (out[0] - out[2]).abs().max() > 1e-3


def test_class_labels_condition_and_default_to_null() -> None:
    config = UNetConfig(**{**TINY16.to_dict(), "num_classes": 3})
    model = build(config).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 10.0])
    with torch.no_grad():
        unconditional = model(x, t)
        assert torch.equal(model(x, t, torch.tensor([3, 3])), unconditional)  # label 3 = null
        assert not torch.allclose(model(x, t, torch.tensor([0, 1])), unconditional)


def test_deterministic_on_cpu_given_seed() -> None:
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1.0, 2.0])
    a, b = build(TINY16, seed=7), build(TINY16, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert torch.equal(a(x, t), b(x, t))
    assert not torch.equal(build(TINY16, seed=8)(x, t), a(x, t))


def test_bf16_autocast_and_channels_last_match_fp32() -> None:
    model = build(TINY16).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
        model_cl = model.to(memory_format=torch.channels_last)
        channels_last = model_cl(x.to(memory_format=torch.channels_last), t)
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-5)


def expected_flops(model: UNet, resolution: int) -> int:
    """Independent count: 2 x MACs of every conv and linear (via hooks) plus attention's two matmuls."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    def attention_hook(module: AttentionBlock, inputs: tuple[torch.Tensor, ...], _: torch.Tensor) -> None:
        nonlocal total
        _, channels, height, width = inputs[0].shape
        total += 2 * 2 * (height * width) ** 2 * channels  # q @ k^T and attn @ v

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, nn.Linear):
            module.register_forward_hook(linear_hook)
        elif isinstance(module, AttentionBlock):
            module.register_forward_hook(attention_hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution), torch.zeros(1))
    return total


def test_flops_per_image_matches_an_independent_count() -> None:
    model = UNet(TINY16)
    assert flops_per_image(model, 16) == expected_flops(model, 16)
    tiny = UNet(preset_config("tiny", 32))
    assert flops_per_image(tiny, 32) == expected_flops(tiny, 32)
    small = UNet(preset_config("small", 16))  # 16 groups, 48-channel heads: the same count as before
    old_small = UNet(
        UNetConfig.from_dict({**OLD_SMALL32, "resolution": 16, "attention_resolutions": [16, 8, 4, 2]})
    )
    assert flops_per_image(small, 16) == expected_flops(small, 16) == flops_per_image(old_small, 16)


def test_config_json_round_trip_and_errors() -> None:
    config = preset_config("base", 64)
    assert config.attention_resolutions == (16, 8)
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    with pytest.raises(DiffkitError, match="Unknown model preset"):
        preset_config("huge", 64)
    with pytest.raises(DiffkitError, match="divisible by 8"):
        preset_config("base", 36)
    with pytest.raises(DiffkitError, match="Unknown U-Net config keys"):
        UNetConfig.from_dict({**config.to_dict(), "colour": "blue"})


def test_parameter_estimate_matches_the_built_model() -> None:
    """The config-only count (used to refuse huge configs before allocating) equals the real count."""
    from diffkit.models.config import estimate_parameters  # here: the module imports on older code too

    configs = [preset_config(name, 64) for name in PRESETS] + [
        TINY16,
        UNetConfig(
            channels=24, channel_mults=(1, 3, 2), num_res_blocks=2, attention_resolutions=(32, 8),
            dropout=0.0, resolution=32, in_channels=1, out_channels=6, head_dim=8, num_classes=10,
            norm_groups=6,
        ),
    ]  # fmt: skip
    for config in configs:
        with torch.device("meta"):
            model = UNet(config)
        assert estimate_parameters(config) == count_parameters(model), config


def test_absurd_or_mistyped_configs_are_refused_before_allocating() -> None:
    base = preset_config("tiny", 16).to_dict()
    cases = {
        "channels": ({**base, "channels": 4000}, "52.7B parameters"),
        "blocks": ({**base, "num_res_blocks": 10**9}, "num_res_blocks 1000000000 is above the limit"),
        "resolution": ({**base, "resolution": 2**20}, "resolution 1048576 is above the limit"),
        "type": ({**base, "channels": "32"}, "channels must be an integer"),
        "mults": ({**base, "channel_mults": 4}, "channel_mults must be a list of integers"),
        "missing": ({k: v for k, v in base.items() if k != "dropout"}, "missing keys ['dropout']"),
        "heads": (
            {**base, "channels": 200, "head_dim": 64},
            "400 channels do not split into 6 attention heads",
        ),
    }
    for data, message in cases.values():
        with pytest.raises(DiffkitError, match=re.escape(message)):
            UNetConfig.from_dict(data)  # a config only: refused from its numbers, nothing is built


# --- one group count and head size per preset (what diffusers' UNet2DModel holds), old configs unchanged --


def test_a_config_without_norm_groups_builds_the_network_it_was_trained_as() -> None:
    config = UNetConfig.from_dict(json.loads(json.dumps(OLD_SMALL32)))
    assert config.norm_groups is None
    assert config.to_dict() == OLD_SMALL32  # writes back the JSON that older diffkits read
    norms, heads = norms_and_heads(config)
    assert (
        len(norms) == 2 * (4 * 2 + 4 * 3 + 2) + (3 * 2 + 3 * 3 + 1) + 1
    )  # 2 per res block, attentions, output
    assert all(groups == math.gcd(32, width) for width, groups in norms)
    assert {groups for _, groups in norms} == {16, 32}
    assert sorted(set(heads)) == [(96, 1), (144, 2), (192, 3)]  # width // 64: heads of 96, 72, 64
    new = preset_config("small", 32)
    # Same tensors, names and shapes: the old weights would load into the new preset without complaint,
    # so the config stored with them is what must decide the network.
    with torch.device("meta"):
        old_shapes = {k: v.shape for k, v in UNet(config).state_dict().items()}
        new_shapes = {k: v.shape for k, v in UNet(new).state_dict().items()}
    assert old_shapes == new_shapes and sum(s.numel() for s in old_shapes.values()) == 13_154_451
    old_model = build(config)
    new_model = UNet(new).eval()
    new_model.load_state_dict(old_model.state_dict())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 600.0])
    with torch.no_grad():
        assert (old_model.eval()(x, t) - new_model(x, t)).abs().max() > 1e-3


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_every_preset_has_one_group_count_and_one_head_size(resolution: int) -> None:
    expected = {"tiny": (32, 64), "small": (16, 48), "base": (32, 64)}
    for name, (groups, head) in expected.items():
        if name == "tiny" and resolution == 8:
            continue  # tiny at 8 px (tests only) keeps one 32-channel head beside 64s; it does not export
        config = preset_config(name, resolution)
        norms, heads = norms_and_heads(config)
        assert {g for _, g in norms} == {groups}, name
        assert {width // n for width, n in heads} == {head} and all(w % n == 0 for w, n in heads), name
        assert config.head_dim == head and config.norm_groups == (16 if name == "small" else None)
    small_heads = set(norms_and_heads(preset_config("small", resolution))[1])
    assert {(192, 4), (144, 3)} <= small_heads  # the bottleneck and next level attend at every resolution
    assert ((48, 1) in small_heads) == (resolution <= 16)


def test_norm_groups_must_divide_every_width() -> None:
    base = preset_config("small", 16).to_dict()
    cases = {
        5: "norm_groups 5 must be a positive divisor of channels",
        32: "norm_groups 32 must be a positive divisor of channels",  # 48 channels: 16 is the most
        0: "norm_groups 0 must be a positive divisor of channels",
        "16": "norm_groups must be an integer or null",
    }
    for groups, message in cases.items():
        with pytest.raises(DiffkitError, match=re.escape(message)):
            UNetConfig.from_dict({**base, "norm_groups": groups})
    for groups in (1, 3, 48):  # any divisor of channels divides every width (all are multiples of it)
        norms, _ = norms_and_heads(UNetConfig.from_dict({**base, "norm_groups": groups}))
        assert {g for _, g in norms} == {groups}


def test_preset_shape_overrides_change_only_width_and_depth() -> None:
    """--channels / --num-res-blocks: the preset with that base width or depth, every other field kept,
    equal to a UNetConfig written out by hand; a width the preset's groups cannot split is refused."""
    tiny = preset_config("tiny", 32)
    for overrides in ({"channels": 40}, {"num_res_blocks": 2}, {"channels": 24, "num_res_blocks": 3}):
        config = preset_config("tiny", 32, **overrides)
        assert config == UNetConfig(**(tiny.to_dict() | overrides))
        with torch.device("meta"):
            model = UNet(config)
        width = overrides.get("channels", 32)
        assert model.input_conv.out_channels == width
        # blocks per level on the way down: num_res_blocks each (the count the override sets)
        assert [len(level) for level in model.down] == [overrides.get("num_res_blocks", 1)] * 4
    assert preset_config("tiny", 32, channels=None, num_res_blocks=None) == tiny
    with pytest.raises(DiffkitError, match="norm_groups 16 must be a positive divisor of channels"):
        preset_config("small", 32, channels=40)  # small's 16 groups
    for bad in (0, -8, True, 2.5):
        with pytest.raises(DiffkitError, match="channels must be a positive integer"):
            preset_config("tiny", 32, channels=bad)  # type: ignore[arg-type]
    with pytest.raises(DiffkitError, match="num_res_blocks must be a positive integer"):
        preset_config("tiny", 32, num_res_blocks=0)
