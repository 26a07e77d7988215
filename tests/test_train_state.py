"""What a step does to the training state, against independent computations: the EMA update (by hand
and through a training run), dropped labels becoming exactly the null label, and a kill -9 at the
moment ``state-latest.pt`` is being written leaving a run that resumes bit-exactly."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

import pytest
import torch

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.runs import state as state_file
from diffkit.train.batcher import DeviceBatcher
from diffkit.train.config import TrainConfig
from diffkit.train.distributed import reseed_dropout
from diffkit.train.ema import EMA
from diffkit.train.phema import PowerEMA, sigma_rel_to_gamma
from diffkit.train.run import train
from diffkit.train.state import LOSS_SEED_OFFSET
from diffkit.train.step import drop_labels

FAST: dict[str, Any] = dict(
    preset="tiny", resolution=16, batch_size=8, device="cpu", precision="fp32", progress=False, report=False,
    sample_every_kimg=0.0, sample_grid=4, sample_steps=2, log_every_steps=1, warmup_kimg=0.2,
)  # fmt: skip


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_ema_and_power_ema_updates_equal_a_hand_computation() -> None:
    """ema <- beta ema + (1 - beta) param, step by step, with beta from the half-life written out here
    (halflife = min(halflife_kimg * 1000, rampup * nimg); beta = 0.5 ** (batch / halflife)), and the
    power EMA's beta_t = (1 - 1/t) ** (gamma + 1)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ema, power = EMA(model, halflife_kimg=0.02, rampup=0.5), PowerEMA(model, (0.1,))
    expected, expected_power = _params(model), _params(model)
    gamma = sigma_rel_to_gamma(0.1)
    batch, nimg = 8, 0
    for t in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        beta = 0.5 ** (batch / max(min(20.0, 0.5 * nimg), 1e-8))
        expected = [beta * e + (1 - beta) * p for e, p in zip(expected, model.parameters(), strict=True)]
        power_beta = (1 - 1 / t) ** (gamma + 1)
        expected_power = [
            power_beta * e + (1 - power_beta) * p
            for e, p in zip(expected_power, model.parameters(), strict=True)
        ]
        assert ema.update(model, batch, nimg) == pytest.approx(beta, rel=1e-12)
        power.update(model, t)
        nimg += batch
        for got, want in zip(ema.model.parameters(), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        for got, want in zip(power.models[0].parameters(), expected_power, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert 0.2 < beta < 0.9  # the last steps blended, neither copied nor kept


def test_the_ema_of_a_training_run_equals_the_hand_computed_average(faces: Path, tmp_path: Path) -> None:
    """The live weights after every step (recorded as the loop hands them to the EMA), averaged by hand,
    equal the EMA the run saves in its state and its snapshot."""
    from safetensors.torch import load_file

    seen: list[tuple[int, list[torch.Tensor]]] = []
    start: list[list[torch.Tensor]] = []
    names: list[list[str]] = []
    real_init, real_update = EMA.__init__, EMA.update

    def init(self: EMA, model: torch.nn.Module, *args: Any) -> None:
        start.append(_params(model))
        names.append([name for name, _ in model.named_parameters()])
        real_init(self, model, *args)

    def update(self: EMA, model: torch.nn.Module, batch_size: int, nimg: int) -> float:
        seen.append((nimg, _params(model)))
        return real_update(self, model, batch_size, nimg)

    options = FAST | dict(ema_halflife_kimg=0.02, ema_rampup=0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EMA, "__init__", init)
        patch.setattr(EMA, "update", update)
        train(TrainConfig(data=faces, out=tmp_path / "run", steps=5, **options))
    assert [nimg for nimg, _ in seen] == [0, 8, 16, 24, 32] and len(start) == 1
    expected = start[0]
    for nimg, params in seen:
        beta = 0.5 ** (8 / max(min(20.0, 0.5 * nimg), 1e-8))
        expected = [beta * e + (1 - beta) * p for e, p in zip(expected, params, strict=True)]
    saved = torch.load(tmp_path / "run" / "state-latest.pt", weights_only=True)
    snapshot = load_file(tmp_path / "run" / "ema-000000.safetensors")
    assert len(names) == 1 and len(names[0]) == len(expected)
    for name, want in zip(names[0], expected, strict=True):
        torch.testing.assert_close(saved["ema"][name], want, rtol=0, atol=1e-6)
        assert torch.equal(snapshot[name], saved["ema"][name])


def test_dropped_labels_become_exactly_the_null_label(faces: Path, tmp_path: Path) -> None:
    """The labels the loss sees are the batch's labels with exactly those whose coin (the loss
    generator's first draw of the step, computed here from a fresh generator) is below --label-dropout
    replaced by the null label, which is the class count (2), never a real class."""
    data = tmp_path / "data"
    for index, face in enumerate(sorted(faces.glob("*.png"))):  # classes a and b, alternating
        (data / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        (data / "ab"[index % 2] / face.name).write_bytes(face.read_bytes())
    batch, dropout, seed = 10, 0.5, 4
    gathered: list[torch.Tensor] = []
    given: list[torch.Tensor] = []
    real_gather, real_loss = DeviceBatcher.gather, GaussianDiffusion.loss

    def gather(self: DeviceBatcher, indices: torch.Tensor, flips: torch.Tensor) -> Any:
        images, labels = real_gather(self, indices, flips)
        gathered.append(labels.clone())
        return images, labels

    def loss(
        self: GaussianDiffusion, model: Any, x0: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        given.append(kwargs["labels"].clone())
        return real_loss(self, model, x0, *args, **kwargs)

    options = FAST | dict(batch_size=batch, label_dropout=dropout, seed=seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DeviceBatcher, "gather", gather)
        patch.setattr(GaussianDiffusion, "loss", loss)
        train(TrainConfig(data=data, out=tmp_path / "run", steps=3, **options))
    # The loss generator's stream, drawn independently: per step the coins, then timesteps and noise.
    generator = torch.Generator().manual_seed(seed + LOSS_SEED_OFFSET)
    diffusion = GaussianDiffusion.create("cosine", "v")
    dropped = kept = 0
    for labels, seen in zip(gathered, given, strict=True):
        coins = torch.rand(batch, generator=generator)
        diffusion.draw_training_inputs((batch, 3, 16, 16), generator, torch.device("cpu"))
        assert set(labels.tolist()) <= {0, 1}
        assert torch.equal(seen, torch.where(coins < dropout, torch.tensor(2), labels))
        dropped += int((coins < dropout).sum())
        kept += int((coins >= dropout).sum())
    assert len(given) == 3 and dropped > 3 and kept > 3
    labels = torch.tensor([0, 1, 1, 0])
    assert drop_labels(labels, 0.5, 2, torch.tensor([0.1, 0.9, 0.4, 0.5])).tolist() == [2, 1, 2, 0]
    assert drop_labels(labels, 0.5, 2, None) is labels


def test_dropout_masks_change_every_step_and_micro_batch(faces: Path, tmp_path: Path) -> None:
    """Dropout is reseeded from (seed, step, rank, micro-batch): each micro-batch of each step draws its
    own masks (the resume tests alone pass with one mask for the whole run), and the first mask of each
    is exactly what a fresh ``reseed_dropout(seed, step, 0, micro)`` draws."""
    seed, p, steps, accum = 5, 0.3, 2, 2
    masks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (dropped entries, input) per training call
    real_forward = torch.nn.Dropout.forward

    def forward(self: torch.nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        out = real_forward(self, x)
        if self.training and x.device.type != "meta":  # not the FLOP count's shape-only forward
            masks.append(((out == 0) & (x != 0), x.detach()))
        return out

    options = FAST | dict(batch_size=8, grad_accum=accum, dropout=p, seed=seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Dropout, "forward", forward)
        train(TrainConfig(data=faces, out=tmp_path / "run", steps=steps, **options))
    per_call = len(masks) // (steps * accum)  # dropout layers met by one micro-batch's forward
    assert per_call >= 2 and len(masks) == per_call * steps * accum
    calls = [masks[k * per_call : (k + 1) * per_call] for k in range(steps * accum)]  # (step, micro) order
    for dropped, x in masks:
        assert 0.15 < dropped.sum().item() / (x != 0).sum().item() < 0.45  # dropout p=0.3 is on
    firsts = [call[0][0] for call in calls]
    for a in range(len(firsts)):
        for b in range(a + 1, len(firsts)):
            assert not torch.equal(firsts[a], firsts[b]), f"micro-batch calls {a} and {b} share a mask"
    for k, call in enumerate(calls):
        step, micro = divmod(k, accum)
        reseed_dropout(seed, step, 0, micro)
        fresh = torch.nn.functional.dropout(torch.ones_like(call[0][1]), p, training=True) == 0
        assert torch.equal(call[0][0], fresh & (call[0][1] != 0)), (step, micro)


# --- kill -9 while state-latest.pt is written -----------------------------------------------------


def _train_and_die_in_second_state_write(options: dict[str, Any]) -> None:
    """Child process: train; in the second state write, cut the temporary file to half and SIGKILL
    itself before the rename (what a kill -9 or a power cut in the middle of the write leaves)."""
    writes = []

    def hook(handle: IO[bytes]) -> None:
        writes.append(handle)
        if len(writes) == 2:
            handle.flush()
            handle.truncate(handle.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)

    state_file.before_replace = hook
    train(TrainConfig(**options))
    os._exit(0)


@pytest.mark.skipif(sys.platform != "linux", reason="forked process")
def test_kill_9_while_the_state_is_written_leaves_a_run_that_resumes_exactly(
    faces: Path, tmp_path: Path
) -> None:
    """A state every 2 steps (with each snapshot); the process dies inside the second write (step 4):
    the state on disk is step 2's, intact; --resume finishes the run bit-identical to one that was
    never killed, and the killed write's temporary file is gone."""
    options = FAST | dict(data=faces, steps=6, snapshot_every_kimg=0.016, dropout=0.1)
    whole = train(TrainConfig(out=tmp_path / "whole", **options))
    run = tmp_path / "killed"
    child = multiprocessing.get_context("fork").Process(
        target=_train_and_die_in_second_state_write, args=(options | dict(out=run),)
    )
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL
    leftovers = list(run.glob(".state-latest.pt.*.tmp"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    assert state_file.load_state(run / "state-latest.pt")["step"] == 2
    resumed = train(TrainConfig(out=run, resume=True, **options))
    assert resumed.step == 6 and resumed.resumed_from_step == 2 and whole.step == 6
    assert list(run.glob(".state-latest.pt.*.tmp")) == []
    a = torch.load(tmp_path / "whole" / "state-latest.pt", weights_only=True)
    b = torch.load(run / "state-latest.pt", weights_only=True)
    for part in ("model", "ema"):
        assert [k for k in a[part] if not torch.equal(a[part][k], b[part][k])] == [], part
    assert a["batcher"] == b["batcher"]
    losses = [
        [json.loads(line)["loss"] for line in (r / "stats.jsonl").read_text().splitlines()]
        for r in (tmp_path / "whole", run)
    ]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
