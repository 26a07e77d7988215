"""Does the model copy its training images? Nearest neighbours of each generated image.

Two spaces: pixels at low resolution (RMS distance in [0, 1] units, exact copies score 0) and
Inception pool3 features (cosine similarity). A generated image is flagged as a near-copy when its
nearest training image is much closer than the second nearest: NN1/NN2 < 1/3 in pixel space (the
rule used by Yoon et al. / Gu et al. 2023). For scale, the report also gives the same NN1 distance
among training images themselves (each against the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffkit.metrics.images import load_images

PIXEL_RESOLUTION = 32
RATIO_THRESHOLD = 1 / 3
GALLERY_SIZE = 12


@dataclass
class Neighbours:
    distances: np.ndarray  # (N, 2) nearest and second-nearest distances
    indices: np.ndarray  # (N, 2)


@dataclass
class MemorizationResult:
    pixel_resolution: int
    ratio_threshold: float
    pixel: Neighbours
    feature_similarity: np.ndarray  # (N,) cosine similarity to the nearest reference in feature space
    feature_index: np.ndarray  # (N,)
    reference_nn1_pixel: np.ndarray  # NN1 distance of reference images among themselves (a sample)

    @property
    def ratio(self) -> np.ndarray:
        return self.pixel.distances[:, 0] / np.maximum(self.pixel.distances[:, 1], 1e-12)

    @property
    def flagged(self) -> np.ndarray:
        return self.ratio < self.ratio_threshold

    def closest_pairs(self, k: int = GALLERY_SIZE) -> list[tuple[int, int]]:
        order = np.argsort(self.pixel.distances[:, 0], kind="stable")[:k]
        return [(int(i), int(self.pixel.indices[i, 0])) for i in order]

    def summary(self) -> dict[str, float | int]:
        nn1 = self.pixel.distances[:, 0]
        return {
            "share_flagged": float(self.flagged.mean()),
            "n_flagged": int(self.flagged.sum()),
            "ratio_threshold": self.ratio_threshold,
            "pixel_resolution": self.pixel_resolution,
            "nn1_pixel_rms_p1": float(np.percentile(nn1, 1)),
            "nn1_pixel_rms_median": float(np.median(nn1)),
            "reference_nn1_pixel_rms_p1": float(np.percentile(self.reference_nn1_pixel, 1)),
            "reference_nn1_pixel_rms_median": float(np.median(self.reference_nn1_pixel)),
            "nn_ratio_min": float(self.ratio.min()),
            "feature_cosine_max": float(self.feature_similarity.max()),
            "feature_cosine_median": float(np.median(self.feature_similarity)),
        }


def pixel_vectors(
    files: tuple[Path, ...] | list[Path], resolution: int, low: int = PIXEL_RESOLUTION, batch: int = 256
) -> np.ndarray:
    """Images at ``low`` px (PIL box filter from the evaluation resolution), flattened to [0, 1] floats."""
    out = np.empty((len(files), low * low * 3), dtype=np.float32)
    for start in range(0, len(files), batch):
        images = load_images(files[start : start + batch], resolution)
        for offset, image in enumerate(images):
            small = (
                Image.fromarray(image).resize((low, low), Image.Resampling.BOX)
                if resolution != low
                else image
            )
            out[start + offset] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return out


def nearest_two(
    queries: np.ndarray, support: np.ndarray, exclude_self: bool = False, chunk: int = 1024
) -> Neighbours:
    """Two nearest support rows (RMS distance) for every query row, in chunks."""
    q = torch.from_numpy(queries)
    s = torch.from_numpy(support)
    scale = float(np.sqrt(queries.shape[1]))
    distances, indices = [], []
    for start in range(0, len(q), chunk):
        block = torch.cdist(q[start : start + chunk], s)
        if exclude_self:
            rows = torch.arange(block.shape[0])
            block[rows, rows + start] = float("inf")
        values, index = block.topk(2, dim=1, largest=False)
        distances.append(values / scale)
        indices.append(index)
    return Neighbours(torch.cat(distances).numpy(), torch.cat(indices).numpy())


def nearest_cosine(
    queries: np.ndarray, support: np.ndarray, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    q = torch.nn.functional.normalize(torch.from_numpy(queries.astype(np.float32)), dim=1)
    s = torch.nn.functional.normalize(torch.from_numpy(support.astype(np.float32)), dim=1)
    best, where = [], []
    for start in range(0, len(q), chunk):
        values, index = (q[start : start + chunk] @ s.T).max(dim=1)
        best.append(values)
        where.append(index)
    return torch.cat(best).numpy(), torch.cat(where).numpy()


def check_memorization(
    generated_files: tuple[Path, ...],
    reference_files: tuple[Path, ...],
    resolution: int,
    generated_features: np.ndarray,
    reference_features: np.ndarray,
    seed: int = 0,
    reference_sample: int = 2000,
) -> MemorizationResult:
    gen_pixels = pixel_vectors(generated_files, resolution)
    ref_pixels = pixel_vectors(reference_files, resolution)
    pixel = nearest_two(gen_pixels, ref_pixels)
    similarity, index = nearest_cosine(generated_features, reference_features)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(ref_pixels), min(reference_sample, len(ref_pixels)), replace=False))
    among = nearest_two(ref_pixels[sample], ref_pixels[sample], exclude_self=True)
    return MemorizationResult(
        PIXEL_RESOLUTION, RATIO_THRESHOLD, pixel, similarity, index, among.distances[:, 0]
    )


def pair_image(generated: Path, reference: Path, resolution: int, display: int = 128) -> Image.Image:
    """Generated image (left) beside its nearest training image (right)."""
    images = load_images([generated, reference], resolution)
    canvas = Image.new("RGB", (2 * display + 4, display), (255, 255, 255))
    for slot, image in enumerate(images):
        tile = Image.fromarray(image).resize((display, display), Image.Resampling.NEAREST)
        canvas.paste(tile, (slot * (display + 4), 0))
    return canvas
