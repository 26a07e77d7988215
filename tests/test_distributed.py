"""Training in several processes (gloo on CPU): K ranks reproduce one rank, only rank 0 writes, a dead
rank (either one) leaves a state that resumes exactly, a signal to one rank stops all of them after the
same step.

Ranks are real processes (forked, so they start in a fraction of a second), joined through torch's
env:// rendezvous on a free port per test; every wait has a timeout, so a hang fails the test.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

from diffkit.fakesite.faces import write_face_folder
from diffkit.train import distributed as dist_mod
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

FAST: dict[str, Any] = dict(
    preset="tiny",
    resolution=16,
    batch_size=8,
    device="cpu",
    precision="fp32",
    progress=False,
    report=False,
    sample_every_kimg=0.0,
    sample_grid=4,
    sample_steps=2,
    log_every_steps=1,
    warmup_kimg=0.02,
    seed=1,
)
TIMEOUT_S = 120
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked ranks")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(
    rank: int, size: int, port: int, options: dict[str, Any], report: Path, action: str | None
) -> None:
    """One rank: train with ``options``; write what happened to ``report`` (a JSON file)."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    writes: list[str] = []
    run_dir = str(Path(options["out"]).absolute())

    def audit(event: str, args: tuple) -> None:  # every file this rank opens for writing in the run folder
        if event == "open" and isinstance(args[0], str | Path) and str(args[0]).startswith(run_dir):
            mode, flags = args[1], args[2]
            if (mode and any(c in mode for c in "wax+")) or (flags & (os.O_WRONLY | os.O_RDWR)):
                writes.append(str(args[0]))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove") and str(args[0]).startswith(
            run_dir
        ):
            writes.append(f"{event} {args[0]}")

    sys.addaudithook(audit)
    if action is not None:  # "kill@N" / "sigint@N": this rank does it to itself when step N starts
        what, at = action.split("@")
        real = dist_mod.reseed_dropout

        def hooked(seed: int, step: int, rank_: int, micro: int) -> None:
            if step == int(at) and micro == 0:
                os.kill(os.getpid(), signal.SIGKILL if what == "kill" else signal.SIGINT)
            real(seed, step, rank_, micro)

        dist_mod.reseed_dropout = hooked
    outcome: dict[str, Any] = {"rank": rank}
    try:
        result = train(TrainConfig(**options))
        outcome |= {"step": result.step, "interrupted": result.interrupted, "files": result.files}
    except SystemExit as exc:
        outcome["exit"] = exc.code
    except Exception as exc:  # noqa: BLE001 (the test reads it)
        outcome["error"] = f"{type(exc).__name__}: {exc}"
        outcome["traceback"] = traceback.format_exc()
    outcome["writes"] = writes
    report.write_text(json.dumps(outcome))
    os._exit(0)


def run_ranks(
    size: int, options: dict[str, Any], tmp: Path, actions: dict[int, str] | None = None
) -> list[dict]:
    """Start ``size`` forked ranks, wait (with a timeout), return each rank's report (None if it died)."""
    context = multiprocessing.get_context("fork")
    port = _free_port()
    reports = [tmp / f"rank-{rank}-{os.urandom(4).hex()}.json" for rank in range(size)]
    processes = [
        context.Process(
            target=_rank_main, args=(rank, size, port, options, reports[rank], (actions or {}).get(rank))
        )
        for rank in range(size)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    hung = [p for p in processes if p.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    assert not hung, "a rank hung"
    return [json.loads(path.read_text()) if path.exists() else None for path in reports]


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / "state-latest.pt", weights_only=True)


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    flat = {f"model.{k}": v for k, v in state["model"].items()} | {
        f"ema.{k}": v for k, v in state["ema"].items()
    }
    for index, moments in state["optimizer"]["state"].items():
        flat |= {f"opt.{index}.{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)}
    return flat


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]


def test_two_ranks_with_half_the_batch_each_match_one_rank(tmp_path: Path) -> None:
    """1 rank x batch 8 == 2 ranks x 4 (one of them in two micro-batches of 2), within float rounding,
    on a labelled set (label-dropout coins too); the data order is the same integers; rank 1 writes
    nothing in the run folder."""
    data = tmp_path / "labelled"
    write_face_folder(data / "cats", 12, size=32, seed=0)
    write_face_folder(data / "dogs", 12, size=32, seed=1)
    one = TrainConfig(data=data, out=tmp_path / "one", steps=4, label_dropout=0.5, **FAST)
    train(one)  # also builds the data cache the ranks then share
    options = FAST | dict(data=str(data), out=str(tmp_path / "two"), steps=4, grad_accum=2, label_dropout=0.5)
    rank0, rank1 = run_ranks(2, options, tmp_path)
    assert rank0 is not None and rank1 is not None
    assert "error" not in rank0 and "error" not in rank1, (rank0, rank1)
    assert rank0["step"] == rank1["step"] == 4
    assert rank1["writes"] == [] and rank1["files"] == []
    assert any("state-latest" in path for path in rank0["writes"])
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert a["batcher"] == b["batcher"] and b["world_size"] == 2
    tensors_a, tensors_b = _tensors(a), _tensors(b)
    assert tensors_a.keys() == tensors_b.keys()
    worst = max((tensors_a[k] - tensors_b[k]).abs().max().item() for k in tensors_a)
    assert 0 <= worst < 1e-5, worst
    assert _losses(tmp_path / "one") == pytest.approx(_losses(tmp_path / "two"), rel=1e-5)
    stats = [json.loads(line) for line in (tmp_path / "two" / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in stats] == [0.008, 0.016, 0.024, 0.032]  # the global batch


def test_a_dead_rank_leaves_a_state_that_resumes_exactly(faces: Path, tmp_path: Path) -> None:
    """Rank 1 is SIGKILLed as step 3 starts: rank 0 saves the state of step 3 and says how to resume;
    a 2-rank --resume then ends bit-identical to an uninterrupted 2-rank run (dropout on)."""
    options = FAST | dict(data=str(faces), steps=5, dropout=0.1)
    whole = run_ranks(2, options | dict(out=str(tmp_path / "whole")), tmp_path)
    assert all(r is not None and "error" not in r for r in whole), whole
    broken = run_ranks(2, options | dict(out=str(tmp_path / "split")), tmp_path, actions={1: "kill@3"})
    assert broken[1] is None  # killed
    assert broken[0] is not None and "a training process stopped at step 3" in broken[0]["error"]
    assert "torchrun --nproc_per_node 2 -m diffkit train --out" in broken[0]["error"]
    assert _state(tmp_path / "split")["step"] == 3
    resumed = run_ranks(2, options | dict(out=str(tmp_path / "split"), resume=True), tmp_path)
    assert resumed[0] is not None and resumed[0].get("step") == 5, resumed
    a, b = _tensors(_state(tmp_path / "whole")), _tensors(_state(tmp_path / "split"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_kill_9_of_rank_0_then_resume_continues_from_its_last_state(faces: Path, tmp_path: Path) -> None:
    """Rank 0 (the writer) is SIGKILLed as step 3 starts, after the state of step 2 was saved with its
    snapshot: rank 1 stops with one line saying how to resume; a 2-rank --resume continues from step 2
    and ends bit-identical to a run that was never killed."""
    options = FAST | dict(data=str(faces), steps=5, snapshot_every_kimg=0.016)
    whole = run_ranks(2, options | dict(out=str(tmp_path / "whole")), tmp_path)
    assert all(r is not None and "error" not in r for r in whole), whole
    broken = run_ranks(2, options | dict(out=str(tmp_path / "split")), tmp_path, actions={0: "kill@3"})
    assert broken[0] is None  # killed
    assert broken[1] is not None and "another training process stopped at step" in broken[1]["error"]
    assert "--resume" in broken[1]["error"] and broken[1]["writes"] == []
    assert _state(tmp_path / "split")["step"] == 2
    resumed = run_ranks(2, options | dict(out=str(tmp_path / "split"), resume=True), tmp_path)
    assert resumed[0] is not None and resumed[0].get("step") == 5, resumed
    a, b = _tensors(_state(tmp_path / "whole")), _tensors(_state(tmp_path / "split"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(faces: Path, tmp_path: Path) -> None:
    """SIGINT reaches rank 1 only: both ranks stop after that step, rank 0 saves, nothing hangs; a
    one-process --resume (a rank-count change) continues with the same data order."""
    options = FAST | dict(data=str(faces), steps=6, out=str(tmp_path / "run"))
    rank0, rank1 = run_ranks(2, options, tmp_path, actions={1: "sigint@2"})
    assert rank0 is not None and rank1 is not None, (rank0, rank1)
    assert rank0["interrupted"] and rank1["interrupted"] and rank0["step"] == rank1["step"] == 3
    assert _state(tmp_path / "run")["step"] == 3
    result = train(TrainConfig(**(options | dict(resume=True, data=faces))))
    assert result.step == 6 and result.resumed_from_step == 3
    assert _state(tmp_path / "run")["batcher"]["position"] == (6 * 8) % 24


def test_shares_and_batch_checks() -> None:
    world = dist_mod.World(rank=1, size=4)
    assert dist_mod.share(16, world) == slice(4, 8)
    dist_mod.check_divisible(16, 2, dist_mod.World(rank=0, size=2))
    with pytest.raises(Exception, match="does not split into 3 ranks"):
        dist_mod.check_divisible(16, 1, dist_mod.World(rank=0, size=3))
