"""FID and KID while training (``--eval-every-kimg``): fixed-noise EMA samples against the training data.

The numbers come from the same engine, preprocessing and feature cache as ``diffkit eval``
(:mod:`diffkit.metrics`): torch-fidelity's InceptionV3, the training images as ``diffkit eval --run``
reads them, FID and KID with torch-fidelity's arithmetic. The training data's features are extracted
once per run (and a later ``diffkit eval`` against the same data finds them in the cache); the
samples' features are computed every time, in memory.

The samples are the same every time: ``eval_samples`` noise images from their own generator, denoised
by the EMA model in eval mode with DPM-Solver++ in ``eval_steps`` steps, so a change between two
evaluations is a change of the model, not of the noise. All of it runs inside a forked RNG (building
Inception initialises layers from the global generator, which dropout also draws from), so a run with
evaluation on trains exactly the same weights as one with it off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffkit.console import Bar, err_console, shown
from diffkit.device import Precision
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.pixels import to_uint8
from diffkit.diffusion.samplers import make_sampler, run_sampler
from diffkit.errors import DiffkitError
from diffkit.metrics import caveats as cav
from diffkit.metrics.features import (
    Extractor,
    build_inception,
    default_cache_dir,
    extract_features,
    image_features,
)
from diffkit.metrics.fid import FastFrechet, frechet_distance
from diffkit.metrics.images import describe_set
from diffkit.metrics.kid import DEFAULT_SUBSETS, kernel_distance
from diffkit.metrics.weights import TORCH_FIDELITY_INCEPTION, resolve_weights
from diffkit.models.unet import UNet
from diffkit.train.cache import ImageCache
from diffkit.train.config import TrainConfig

EVAL_SEED_OFFSET = 3  # fixed eval noise from seed + 3 (batcher: seed, loss: seed + 1, grid: seed + 2)
SAMPLER = "dpmpp"  # DPM-Solver++(2M): good images in 10-25 steps, deterministic
ENGINE = "torch-fidelity"  # diffkit eval's default engine
CHUNK = 64  # images per sampling and feature batch (fixed, so the noise does not depend on the device)


@contextmanager
def rng_untouched(device: torch.device) -> Iterator[None]:
    """Every global torch RNG the training draws from is as it was when the block ends."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        yield


def _crossed(every_nimg: int, nimg: int, batch: int) -> bool:
    """Whether the step that ended at ``nimg`` crossed a multiple of ``every_nimg`` (as the loop's grids)."""
    return every_nimg > 0 and nimg // every_nimg > (nimg - batch) // every_nimg


@dataclass
class TrainingEvaluator:
    """Holds the Inception network and the training data's features for the length of a run."""

    every_nimg: int
    samples: int
    steps: int
    seed: int
    resolution: int
    precision: Precision
    device: torch.device
    extractor: Extractor
    reference: np.ndarray  # (M, 2048) pool3 features of the training images
    reference_cached: bool  # the reference features came from the feature cache
    frechet: FastFrechet

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        dataset: ImageCache,
        device: torch.device,
        precision: Precision,
        *,
        weights: Path | None = None,
        cache_dir: Path | None = None,
    ) -> TrainingEvaluator | None:
        """None when ``eval_every_kimg`` is 0, or (after saying why, once) when it cannot run.

        ``weights``: an Inception file (default: found as ``diffkit eval`` finds it without
        ``--weights``: ``$DIFFKIT_INCEPTION_WEIGHTS``, torch hub's cache, one download).
        ``cache_dir``: the feature cache (default: ``diffkit eval``'s, when writable).
        """
        if config.eval_every_kimg <= 0:
            return None
        if len(dataset.files) < 2:
            return _off("the training data holds fewer than 2 images")
        data_dir = Path(dataset.data_dir)
        try:
            with rng_untouched(device):
                extractor = build_inception(
                    ENGINE, resolve_weights(TORCH_FIDELITY_INCEPTION, weights), device
                )
                reference_set = describe_set(
                    data_dir,
                    [data_dir / name for name in reference_files(dataset.files, config)],
                    config.resolution,
                )
                bar = Bar("eval: training data features", total=len(reference_set), enabled=config.progress)
                with bar:
                    features = extract_features(
                        reference_set,
                        extractor,
                        batch_size=CHUNK,
                        cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
                        progress=lambda count: bar.update(advance=count),
                    )
        except DiffkitError as exc:  # no weights offline, an unreadable file: the training goes on
            return _off(str(exc))
        reference = features["2048"]
        return cls(
            every_nimg=round(config.eval_every_kimg * 1000),
            samples=config.eval_samples,
            steps=config.eval_steps,
            seed=config.seed + EVAL_SEED_OFFSET,
            resolution=config.resolution,
            precision=precision,
            device=device,
            extractor=extractor,
            reference=reference,
            reference_cached=features.from_cache,
            frechet=FastFrechet(reference),
        )

    def due(self, nimg: int, batch_size: int) -> bool:
        """Whether the step that ended at ``nimg`` crossed a multiple of ``eval_every_kimg``."""
        return _crossed(self.every_nimg, nimg, batch_size)

    def evaluate(self, ema_model: UNet, diffusion: GaussianDiffusion, nimg: int, step: int) -> dict[str, Any]:
        """FID and KID of the fixed sample set now; the record for ``StatsWriter.log_eval``."""
        started = time.perf_counter()
        with rng_untouched(self.device):
            images = self.sample(ema_model, diffusion)
            sampled = time.perf_counter()
            generated = image_features(images, self.extractor, batch_size=CHUNK)["2048"]
        extracted = time.perf_counter()
        n, m = len(generated), len(self.reference)
        fid = frechet_distance(generated, self.reference, self.frechet)
        subset = cav.kid_subset_size(n, m)
        kid, kid_std, _ = kernel_distance(generated, self.reference, DEFAULT_SUBSETS, subset)
        weights = cav.weights_status(self.extractor.weights.official)
        record = {
            "step": step,
            "kimg": nimg / 1000,
            "fid": fid,
            "kid": kid,
            "kid_std": kid_std,
            "n": n,
            "n_reference": m,
            "fid_label": cav.fid_label(n, m),
            "headline": cav.fid_headline(n, m, fid, ENGINE, weights),
            "engine": ENGINE,
            "weights": weights,
            "kid_subset_size": subset,
            "sampler": SAMPLER,
            "sampler_steps": self.steps,
            "seed": self.seed,
            "sample_seconds": sampled - started,
            "feature_seconds": extracted - sampled,
            "seconds": time.perf_counter() - started,
        }
        err_console.print(f"{nimg / 1000:.2f} kimg: {shown(record['headline'])}", highlight=False)
        return record

    @torch.no_grad()
    def sample(self, ema_model: UNet, diffusion: GaussianDiffusion) -> np.ndarray:
        """The fixed sample set (N, H, W, 3) uint8: the same noise, in the same chunks, at every call."""
        generator = torch.Generator().manual_seed(self.seed)  # CPU: the same noise on every device
        sampler = make_sampler(SAMPLER, diffusion)
        channels = ema_model.config.in_channels
        model_device = next(ema_model.parameters()).device
        was_training = ema_model.training
        ema_model.eval()
        chunks = []
        try:
            for start in range(0, self.samples, CHUNK):
                count = min(CHUNK, self.samples - start)
                noise = torch.randn(count, channels, self.resolution, self.resolution, generator=generator)
                with self.precision.autocast():
                    chunks.append(
                        to_uint8(run_sampler(ema_model, sampler, noise.to(model_device), self.steps))
                    )
        finally:
            ema_model.train(was_training)
        return np.concatenate(chunks)


def reference_files(files: list[str], config: TrainConfig) -> list[str]:
    """The training images FID is measured against: all, or a fixed random subset of
    ``config.eval_reference`` (the same for the same data and seed, so every evaluation of a run, and
    its resume, compares with the same reference; in the data's order, so the feature cache's key for
    the set does not depend on the draw's order)."""
    if config.eval_reference == 0 or config.eval_reference >= len(files):
        return list(files)
    rng = np.random.default_rng(config.seed + EVAL_SEED_OFFSET)
    chosen = np.sort(rng.choice(len(files), size=config.eval_reference, replace=False))
    return [files[index] for index in chosen]


def _off(reason: str) -> None:
    err_console.print(
        f"[yellow]FID/KID during training (--eval-every-kimg) is off: {shown(reason)}; training goes on[/]",
        highlight=False,
        soft_wrap=True,
    )
    return None
