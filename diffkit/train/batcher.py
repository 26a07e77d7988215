"""Random training batches drawn on the device from the uint8 cache, with random horizontal flips.

The order is a fresh permutation per epoch (every image once per epoch) and the flips a fresh coin per
image per epoch, both from a CPU generator seeded with (seed, epoch). So the whole stream is fixed by
(seed, epoch, position): the same on CPU and CUDA, and resumed exactly from three integers.

Several training processes (torchrun) each hold a batcher of the *global* batch size walking the same
stream; ``next_indices`` advances it by one global batch and ``gather`` builds the images of whichever
slice of it a rank (or a micro-batch) needs, so the split never changes which image sits at which
global position.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.train.cache import ImageCache

__all__ = ["DeviceBatcher"]

# Keep the whole uint8 data set on an accelerator when it takes at most this share of free memory.
DEVICE_MEMORY_SHARE = 0.25


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct, well-mixed seed per epoch (splitmix64 step) so neighbouring epochs are unrelated.
    z = (seed * 0x9E3779B97F4A7C15 + epoch + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


class DeviceBatcher:
    """``next()`` gives a float batch in [-1, 1], NCHW, on ``device``; epochs roll over mid-batch."""

    def __init__(
        self,
        cache: ImageCache,
        batch_size: int,
        device: torch.device,
        generator_seed: int,
        hflip: bool = True,
        channels_last: bool = False,
        labels: np.ndarray | None = None,
        resident: bool | None = None,
    ) -> None:
        """``resident``: keep the whole uint8 set on ``device`` (None: when it fits; on the CPU it is
        resident already). False gathers every batch on the host and copies it over (pinned on CUDA)."""
        if batch_size < 1:
            raise DiffkitError(f"Batch size must be at least 1 (got {batch_size}).")
        if len(cache) == 0:
            raise DiffkitError("The data set is empty.")
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed = int(generator_seed)
        self.hflip = hflip
        self.channels_last = channels_last
        self.num_images = len(cache)
        self.epoch = 0
        self.position = 0  # images of the current epoch already handed out
        self._host_images = self._as_tensor(cache.images)
        self._images = self._host_images
        if resident is None:
            resident = self._fits_on_device(self._host_images.nbytes)
        self.resident = resident
        if resident:  # the same call on the CPU returns the host tensor itself (no copy)
            self._images = self._host_images.to(self.device)
        self._order: Tensor | None = None
        self._flips: Tensor | None = None
        # Class labels ride along with the image indices, so they follow the same resumable order.
        self._labels: Tensor | None = None
        if labels is not None:
            if len(labels) != self.num_images:
                raise DiffkitError(f"{len(labels)} labels for {self.num_images} images")
            self._labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(self._images.device)

    @staticmethod
    def _as_tensor(images: np.ndarray) -> Tensor:
        with warnings.catch_warnings():
            # A read-only memmap is shared, not copied; nothing here ever writes to it.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.asarray(images))

    def _fits_on_device(self, nbytes: int) -> bool:
        if self.device.type == "cpu":
            return True
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            return nbytes <= DEVICE_MEMORY_SHARE * free
        return True  # mps and others: no cheap query; data sets at 64 px are a few hundred MB

    @property
    def images_per_epoch(self) -> int:
        return self.num_images

    def _load_epoch(self) -> None:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_images, generator=generator)
        flips = torch.randint(0, 2, (self.num_images,), generator=generator, dtype=torch.bool)
        index_device = self._images.device
        self._order = order.to(index_device)
        self._flips = flips.to(self.device)

    def _take(self, count: int) -> tuple[Tensor, Tensor]:
        if self._order is None:
            self._load_epoch()
        assert self._order is not None and self._flips is not None
        stop = self.position + count
        indices = self._order[self.position : stop]
        flips = self._flips[self.position : stop]
        self.position = stop
        if self.position == self.num_images:
            self.epoch += 1
            self.position = 0
            self._order = self._flips = None
        return indices, flips

    def next(self) -> Tensor:
        return self.next_batch()[0]

    def next_batch(self) -> tuple[Tensor, Tensor | None]:
        """The next images and their class labels (None for an unlabelled data set)."""
        return self.gather(*self.next_indices())

    def next_indices(self) -> tuple[Tensor, Tensor]:
        """The next batch's image indices and flip coins (advances the stream by ``batch_size``)."""
        parts, flip_parts = [], []
        needed = self.batch_size
        while needed:
            count = min(needed, self.num_images - self.position)
            indices, flips = self._take(count)
            parts.append(indices)
            flip_parts.append(flips)
            needed -= count
        indices = torch.cat(parts) if len(parts) > 1 else parts[0]
        flips = torch.cat(flip_parts) if len(flip_parts) > 1 else flip_parts[0]
        return indices, flips

    def gather(self, indices: Tensor, flips: Tensor) -> tuple[Tensor, Tensor | None]:
        """Float images in [-1, 1] (NCHW on the device, flipped where the coin says) and labels."""
        batch = self._images.index_select(0, indices)  # (B, H, W, 3) uint8
        if batch.device != self.device:  # not resident: gathered on the host, copied over
            batch = (
                batch.pin_memory().to(self.device, non_blocking=True)
                if self.device.type == "cuda"
                else batch.to(self.device)
            )
        if self.hflip:
            batch = torch.where(flips[:, None, None, None], batch.flip(2), batch)
        # NHWC -> NCHW view; its memory is already channels_last, so that layout costs no copy.
        batch = batch.permute(0, 3, 1, 2)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        images = batch.to(dtype=torch.float32, memory_format=layout).mul_(2.0 / 255.0).sub_(1.0)
        labels = None if self._labels is None else self._labels.index_select(0, indices).to(self.device)
        return images, labels

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_images": self.num_images,
            "batch_size": self.batch_size,
            "hflip": self.hflip,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_images"]) != self.num_images:
            raise DiffkitError(
                f"The data set changed since this run started ({state['num_images']} images then, "
                f"{self.num_images} now); resume with the same data folder or start a new run."
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.hflip = bool(state.get("hflip", self.hflip))
        self._order = self._flips = None
