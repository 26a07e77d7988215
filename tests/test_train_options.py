"""Options of train, sample, eval and demo: defaults written once (in the configs), choices as Enums.

Typer shows each option's default in ``--help``; these tests hold that default equal to the config
field it fills, so the help can never drift from what the command really does.
"""

from __future__ import annotations

import re
from enum import Enum

import pytest
import typer
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.demo import DemoConfig
from diffkit.device import PRECISIONS, PrecisionName
from diffkit.diffusion.names import (
    PREDICTIONS,
    SAMPLERS,
    SCHEDULES,
    TIMESTEP_SAMPLINGS,
    PredictionName,
    ScheduleName,
    TimestepSamplingName,
)
from diffkit.diffusion.samplers import SamplerName
from diffkit.eval.config import ENGINES, EngineName, EvalConfig
from diffkit.models.config import PRESETS, PresetName
from diffkit.sample.config import SampleConfig
from diffkit.train.config import TrainConfig

# Option parameter name -> config field, where the two differ.
RENAMED = {
    "train": {"compile_model": "compile"},
    "eval": {"report_path": "report"},
    "demo": {"n": "n_images", "steps": "train_steps"},
}
CONFIGS = {"train": TrainConfig, "sample": SampleConfig, "eval": EvalConfig, "demo": DemoConfig}
NOT_CONFIG = {"json_output", "progress"}  # --json is the CLI's; --progress defaults to "is a terminal"


def _params(command: str) -> dict:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {param.name: param for param in click_command.params}


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_option_default_is_the_config_default(command: str) -> None:
    config_fields = CONFIGS[command].__dataclass_fields__
    checked = 0
    for name, param in _params(command).items():
        field = RENAMED.get(command, {}).get(name, name)
        if name in NOT_CONFIG or field not in config_fields or param.required:
            continue
        expected = config_fields[field].default
        if command == "eval" and field == "metrics":
            expected = ",".join(expected)
        assert _plain(param.default) == expected, f"{command} --{name}: {param.default!r} != {expected!r}"
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("train", ["[default: small]", "[default: 64]", "[default: cosine]",
                   "[default: auto]", "[default: data/faces]"]),
        ("sample", ["[default: 64]", "[default: ddim]", "[default: 50]"]),
        ("eval", ["[default: 1000]", "[default: fid,kid,is]", "[default: torch-fidelity]"]),
    ],
)  # fmt: skip
def test_help_shows_the_config_defaults_and_no_hand_written_ones(command: str, shown: list[str]) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for piece in shown:
        assert piece in text, piece
    assert not re.search(r"\(default \d", text), "a hand-written '(default N)' in the help"


@pytest.mark.parametrize("command", ["train", "sample", "eval", "demo"])
def test_one_progress_flag_on_every_long_command(command: str) -> None:
    params = _params(command)
    assert "progress" in params
    assert set(params["progress"].opts) == {"--progress"}
    assert set(params["progress"].secondary_opts) == {"--no-progress"}
    assert params["progress"].default is None  # on when stderr is a terminal


@pytest.mark.parametrize(
    ("enum", "names"),
    [
        (SamplerName, SAMPLERS),
        (PresetName, tuple(PRESETS)),
        (PrecisionName, PRECISIONS),
        (ScheduleName, SCHEDULES),
        (PredictionName, PREDICTIONS),
        (TimestepSamplingName, TIMESTEP_SAMPLINGS),
        (EngineName, ENGINES),
    ],
)
def test_choice_enums_list_exactly_the_accepted_names(enum: type[Enum], names: tuple[str, ...]) -> None:
    assert tuple(member.value for member in enum) == tuple(names)


def test_enum_members_become_plain_strings_in_configs() -> None:
    """config.json and file names need "ddim", not "SamplerName.ddim"."""
    config = TrainConfig(preset=PresetName.tiny, precision=PrecisionName.fp32)
    assert type(config.preset) is str and config.to_dict()["preset"] == "tiny"
    assert type(config.precision) is str
    sample = SampleConfig(sampler=SamplerName.dpmpp, precision=PrecisionName.auto)
    assert type(sample.sampler) is str and f"{sample.sampler}" == "dpmpp"
