"""diffkit.device: one device choice (auto|cpu|cuda|cuda:N|mps) and one precision choice for every command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from diffkit import device as dev
from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.fakesite.faces import write_face_folder
from diffkit.train.config import TrainConfig

NO_GPU = not torch.cuda.is_available()
NO_MPS = not torch.backends.mps.is_available()


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.skipif(not (NO_GPU and NO_MPS), reason="auto picks the accelerator here")
def test_auto_on_a_cpu_only_machine_is_the_cpu() -> None:
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not NO_MPS, reason="MPS is available here")
def test_mps_that_is_missing_is_one_error_naming_it() -> None:
    with pytest.raises(DiffkitError) as caught:
        dev.resolve_device("mps")
    assert (
        str(caught.value)
        == "--device mps was asked for, but MPS is not available here; use --device auto or cpu"
    )


@pytest.mark.skipif(not NO_GPU, reason="a CUDA GPU is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_that_is_missing_is_one_error_naming_it(name: str) -> None:
    with pytest.raises(DiffkitError) as caught:
        dev.resolve_device(name)
    message = str(caught.value)
    assert message.startswith(f"--device {name} was asked for, but torch sees no CUDA GPU")
    assert "\n" not in message


@pytest.mark.parametrize("name", ["tpu", "cuda:", "cuda:x", "CPU", "mps:0", ""])
def test_unknown_device_names_list_the_choices(name: str) -> None:
    assert not dev.is_device_name(name)
    with pytest.raises(DiffkitError, match="use one of auto, cpu, cuda, cuda:N, mps"):
        dev.resolve_device(name)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_every_command_accepts_the_same_device_names(name: str) -> None:
    assert dev.is_device_name(name)
    TrainConfig(device=name).validate()
    EvalConfig(generated=Path("g"), reference=Path("r"), device=name).validate()  # eval rejected mps before


def test_eval_and_train_refuse_a_bad_device_name_the_same_way() -> None:
    with pytest.raises(
        DiffkitError, match=r"--device must be one of auto, cpu, cuda, cuda:N, mps \(got 'tpu'\)"
    ):
        TrainConfig(device="tpu").validate()
    with pytest.raises(
        DiffkitError, match=r"--device must be one of auto, cpu, cuda, cuda:N, mps \(got 'tpu'\)"
    ):
        EvalConfig(generated=Path("g"), reference=Path("r"), device="tpu").validate()


@pytest.mark.skipif(not NO_MPS, reason="MPS is available here")
def test_eval_with_device_mps_gets_the_same_answer_as_train(tmp_path: Path, faces: Path) -> None:
    """`diffkit demo --device mps` trained on MPS and then eval said `mps` was no device; now both agree."""
    write_face_folder(tmp_path / "gen", 4, size=16, seed=1)
    write_face_folder(tmp_path / "ref", 4, size=16, seed=2)
    evaluated = CliRunner().invoke(app, [
        "eval", "--generated", str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"), "--samples", "4",
        "--metrics", "kid", "--device", "mps", "--json", "--report", str(tmp_path / "eval.html"),
        "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    trained = CliRunner().invoke(app, [
        "train", "--data", str(faces), "--out", str(tmp_path / "run"), "--steps", "1", "--preset", "tiny",
        "--resolution", "16", "--device", "mps", "--no-progress",
    ])  # fmt: skip
    expected = "error: --device mps was asked for, but MPS is not available here; use --device auto or cpu"
    assert one_error_line(evaluated) == expected
    assert one_error_line(trained) == expected


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_on_a_cpu_is_bf16_only_where_it_is_native(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert dev.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    precision = dev.Precision.create("auto", cpu)
    assert precision.dtype == (torch.bfloat16 if native else None)
    assert not precision.scaler.is_enabled()  # loss scaling is for fp16 only


def test_precision_choices_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert dev.resolve_precision("fp32", cpu) == "fp32" and dev.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(DiffkitError, match="fp16 on a CPU is emulated"):
        dev.resolve_precision("fp16", cpu)
    with pytest.raises(DiffkitError, match="unknown precision 'fp8'"):
        dev.resolve_precision("fp8", cpu)
    x = torch.ones(2, 2)
    with dev.Precision.create("fp32", cpu).autocast():
        assert (x @ x).dtype == torch.float32
    with dev.Precision.create("bf16", cpu).autocast():
        assert (x @ x).dtype == torch.bfloat16
