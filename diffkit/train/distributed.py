"""Training in several processes (``torchrun``): the process group, each rank's share, rank-0-only work.

``torchrun --nproc_per_node K -m diffkit train ...`` starts K copies of ``diffkit train`` with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment; :func:`start` joins them into one process group
(NCCL on CUDA, gloo on CPU) and the model is wrapped in ``DistributedDataParallel``. Without those
variables (a plain ``diffkit train``) it is a world of one and nothing here does any communication.

What makes K ranks reproduce the one-rank run:

- ``--batch-size`` is the global batch. The batcher walks the same seeded permutation on every rank and
  each rank gathers only its contiguous slice of every global batch (:func:`share`).
- Timesteps, noise and label-dropout coins are drawn for the whole global batch from the shared loss
  generator on every rank; each keeps its slice, so global batch position i gets the same draws for
  any K.
- Dropout inside the U-Net draws from the global torch RNG, which is reseeded before every micro-batch
  from (seed, step, rank, micro-batch) (:func:`reseed_dropout`). That keeps every rank resumable from
  integers alone, but dropout masks depend on how the batch is split, so with dropout on K ranks are
  statistically, not numerically, the one-rank run.
- DDP averages gradients over ranks; each rank's loss is its share's mean, so the update is the global
  batch mean, as with one rank, up to float rounding in the all-reduce.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import torch
from torch import nn

from diffkit.console import err_console
from diffkit.errors import DiffkitError

T = TypeVar("T")
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# How long a rank waits for the others (rank 0 writing a grid or a report, a slow peer) before failing.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass
class World:
    """This process's place among the training processes (a world of one without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group
    owns_group: bool = False  # whether start() created the group (and stop() destroys it)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (pickled; for configs, paths and resume states)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (one small all-reduce)."""
        if self.enabled:
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.SUM)
        return values

    def main_first(self, work: Callable[[], T]) -> T:
        """Rank 0 runs ``work`` first (it may write: the data cache); then the others run it too."""
        value = self.from_main(work, shared=lambda _: None)
        return value if self.is_main else work()

    def from_main(self, work: Callable[[], T], shared: Callable[[T], Any] = lambda value: value) -> T:
        """Rank 0 runs ``work`` and every rank gets ``shared(value)``; rank 0 keeps the value itself.

        If rank 0 fails, the others stop quietly with the same exit code instead of waiting forever,
        and only rank 0's error is printed.
        """
        if not self.enabled:
            return work()
        if self.is_main:
            try:
                value = work()
            except DiffkitError as error:
                self.broadcast((error.exit_code, None))
                raise
            except BaseException:
                self.broadcast((1, None))
                raise
            self.broadcast((0, shared(value)))
            return value
        failed, value = self.broadcast((0, None))
        if failed:
            raise SystemExit(failed)
        return value

    def stop(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise DiffkitError(f"{name}={os.environ[name]!r} is not a number; start with torchrun") from None


def world_from_env() -> World:
    """The rank layout torchrun put in the environment (a world of one when it is not there)."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    size = _env_int("WORLD_SIZE")
    rank = _env_int("RANK") if "RANK" in os.environ else 0
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    return World(rank=rank, size=size, local_rank=local)


def backend_for(cuda_available: bool) -> str:
    """gloo for CPU tensors, and NCCL for CUDA ones where there is a GPU. The group is made before the
    run's config (and so its device) is known: ``--resume`` reads the device from the run folder."""
    return "cpu:gloo,cuda:nccl" if cuda_available else "gloo"


def start() -> World:
    """Join the process group torchrun set up (nothing to do in a world of one)."""
    world = world_from_env()
    if not world.enabled:
        return world
    cuda = torch.cuda.is_available()
    if cuda and world.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(world.local_rank)  # before any collective: NCCL uses the current GPU
    world.backend = backend_for(cuda)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            world.backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT
        )
        world.owns_group = True
    return world


def place(device: torch.device, world: World) -> torch.device:
    """The device of this rank: the GPU of its local rank on CUDA, else ``device`` as resolved."""
    if not world.enabled:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise DiffkitError(
                f"local rank {world.local_rank} has no GPU (torch sees {torch.cuda.device_count()}); "
                "give torchrun --nproc_per_node at most the number of GPUs"
            )
        return torch.device("cuda", world.local_rank)
    if device.type != "cpu":
        raise DiffkitError(f"several processes train on CUDA (NCCL) or CPU (gloo), not {device.type}")
    return device


def check_divisible(batch_size: int, grad_accum: int, world: World) -> None:
    if batch_size % (world.size * grad_accum):
        raise DiffkitError(
            f"--batch-size {batch_size} does not split into {world.size} ranks x grad_accum {grad_accum}; "
            f"use a multiple of {world.size * grad_accum}"
        )


def share(batch_size: int, world: World) -> slice:
    """This rank's contiguous slice of a global batch."""
    per_rank = batch_size // world.size
    return slice(world.rank * per_rank, (world.rank + 1) * per_rank)


def _mix(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 steps), so neighbouring inputs are unrelated."""
    z = 0
    for value in values:
        z = (z + value * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return z & 0x7FFFFFFFFFFFFFFF


def reseed_dropout(seed: int, step: int, rank: int, micro: int) -> None:
    """Seed the global torch RNG (dropout in the U-Net) from integers: every rank resumes exactly
    without its RNG state being gathered, even when a peer has died."""
    torch.manual_seed(_mix(seed, step, rank, micro))


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` on several ranks (it also broadcasts rank 0's
    weights, so all ranks start equal); the model itself on one."""
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model: nn.Module, last: bool) -> Any:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` came out of a collective because another rank died or timed out."""
    backend_error = getattr(torch.distributed, "DistBackendError", ())
    text = str(error).lower()
    return isinstance(error, backend_error) or (
        isinstance(error, RuntimeError)
        and any(word in text for word in ("gloo", "nccl", "connection", "timed out", "peer"))
    )


class StopOnSignal:
    """Under torchrun: SIGINT or SIGTERM asks every rank to stop after the current step.

    torchrun runs each rank in its own session and passes a terminal Ctrl-C on as one SIGINT (SIGTERM
    when a peer failed), then kills after 30 s; the ranks agree on the stop through the per-step
    all-reduce, so they all leave after the same step and rank 0 saves. A second signal aborts.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print(
            f"[yellow]{signal.Signals(signum).name}: every rank stops after this step; rank 0 saves[/]"
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


@contextmanager
def quiet_unless_main(world: World) -> Iterator[None]:
    """Notes and warnings from rank 0 only, so K ranks do not print everything K times."""
    if world.is_main:
        yield
        return
    quiet = err_console.quiet
    err_console.quiet = True
    try:
        yield
    finally:
        err_console.quiet = quiet


def resume_command(run_dir: object, world: World) -> str:
    prefix = f"torchrun --nproc_per_node {world.size} -m diffkit" if world.enabled else "diffkit"
    return f"{prefix} train --out {run_dir} --resume"
