"""Feature extraction through the engines' own networks, one pass per image set, cached on disk.

One Inception pass yields both the pool3 features (2048-d, for FID/KID/PRC-free metrics) and the
1008-way unbiased logits (for IS). The cache key is (image-set content hash, resolution, extractor,
weights sha256, resize mode), so a changed image, other weights or another engine never reuse stale
features; torch-fidelity's own cache keys by name only and is not used.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffkit.atomic import atomic_write_bytes
from diffkit.errors import DiffkitError
from diffkit.metrics.images import ImageSet, load_images
from diffkit.metrics.weights import ResolvedWeights

CACHE_FORMAT = 1
DEFAULT_CACHE_DIR = Path("~/.cache/diffkit/features")

ProgressFn = Callable[[int], None]  # called with the number of images just processed


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DiffkitError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(device)


class Extractor:
    """A network plus its resize; maps uint8 (B, H, W, 3) batches to named float32 feature arrays."""

    name: str
    resize: str
    outputs: tuple[str, ...]
    weights: ResolvedWeights

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def cache_identity(self) -> dict[str, str]:
        return {
            "extractor": self.name,
            "resize": self.resize,
            "weights_sha256": self.weights.sha256,
            "outputs": ",".join(self.outputs),
        }


class TorchFidelityExtractor(Extractor):
    """torch-fidelity's registered extractors (``inception-v3-compat``, ``vgg16``) with a weights path."""

    def __init__(
        self, extractor: str, layers: tuple[str, ...], weights: ResolvedWeights, device: torch.device
    ):
        from torch_fidelity.utils import create_feature_extractor

        self.name = f"torch-fidelity/{extractor}"
        self.resize = "tf1-bilinear"  # interpolate_bilinear_2d_like_tensorflow1x inside the extractor
        self.outputs = layers
        self.weights = weights
        self.device = device
        try:
            self.model = create_feature_extractor(
                extractor,
                list(layers),
                cuda=False,
                verbose=False,
                feature_extractor_weights_path=str(weights.path),
            ).to(device)
        except Exception as exc:  # any failure to unpickle/match a state dict means: wrong file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DiffkitError(f"cannot load {extractor} weights from {weights.path}: {first}") from None

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        tensor = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(self.device)
        features = self.model(tensor)
        return {name: value.float().cpu().numpy() for name, value in zip(self.outputs, features, strict=True)}


class CleanFidExtractor(Extractor):
    """clean-fid's "clean" mode: PIL bicubic on float32 per channel to 299, NVIDIA TorchScript Inception."""

    def __init__(self, weights: ResolvedWeights, device: torch.device):
        from cleanfid.resize import build_resizer

        self.name = "clean-fid/inception-2015-12-05-torchscript"
        self.resize = "clean (PIL bicubic, float32)"
        self.outputs = ("2048", "logits_unbiased")
        self.weights = weights
        self.device = device
        self.resizer = build_resizer("clean")
        try:
            with warnings.catch_warnings():  # clean-fid's file is TorchScript; torch now calls jit deprecated
                warnings.filterwarnings("ignore", category=FutureWarning)
                self.model = torch.jit.load(str(weights.path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise DiffkitError(
                f"cannot load the clean-fid TorchScript Inception {weights.path}: "
                f"{str(exc).strip().splitlines()[0]}"
            ) from None

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        resized = np.stack([self.resizer(image) for image in batch]).astype(np.float32)
        tensor = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy()).to(self.device)
        # the same steps as cleanfid.inception_torchscript.InceptionV3W.forward (resize_inside=False)
        pool = self.model.layers.forward((tensor - 128) / 128).view(tensor.shape[0], 2048)
        # unbiased logits, like torch-fidelity's logits_unbiased and StyleGAN's no_output_bias
        logits = pool @ self.model.output.weight.T
        return {"2048": pool.float().cpu().numpy(), "logits_unbiased": logits.float().cpu().numpy()}


def build_inception(engine: str, weights: ResolvedWeights, device: torch.device) -> Extractor:
    if engine == "torch-fidelity":
        return TorchFidelityExtractor("inception-v3-compat", ("2048", "logits_unbiased"), weights, device)
    if engine == "clean-fid":
        return CleanFidExtractor(weights, device)
    raise DiffkitError(f"unknown engine {engine!r}")


def build_vgg16(weights: ResolvedWeights, device: torch.device) -> Extractor:
    return TorchFidelityExtractor("vgg16", ("fc2_relu",), weights, device)


@dataclass
class FeatureSet:
    features: dict[str, np.ndarray]
    key: str
    cache_path: Path | None
    from_cache: bool
    n_extracted: int

    def __getitem__(self, name: str) -> np.ndarray:
        return self.features[name]


def cache_key(image_set: ImageSet, extractor: Extractor) -> str:
    identity = {
        "format": CACHE_FORMAT,
        "images": image_set.content_sha256,
        "n": len(image_set),
        "resolution": image_set.resolution,
        **extractor.cache_identity(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _load_cached(path: Path, outputs: tuple[str, ...], n: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            features = {name: data[name] for name in outputs}
    except (OSError, KeyError, ValueError):
        return None  # unreadable or from another version: recompute and overwrite
    if any(array.shape[0] != n for array in features.values()):
        return None
    return features


def extract_features(
    image_set: ImageSet,
    extractor: Extractor,
    *,
    batch_size: int = 64,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    progress: ProgressFn | None = None,
) -> FeatureSet:
    """Features of every image of ``image_set``, from the cache when the key matches."""
    key = cache_key(image_set, extractor)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir).expanduser() / f"{key}.npz"
        if path.is_file():
            cached = _load_cached(path, extractor.outputs, len(image_set))
            if cached is not None:
                if progress:
                    progress(len(image_set))
                return FeatureSet(cached, key, path, True, 0)

    chunks: dict[str, list[np.ndarray]] = {name: [] for name in extractor.outputs}
    files = image_set.files
    for start in range(0, len(files), batch_size):
        batch = load_images(files[start : start + batch_size], image_set.resolution)
        for name, value in extractor(batch).items():
            chunks[name].append(value)
        if progress:
            progress(len(batch))
    features = {name: np.concatenate(values).astype(np.float32) for name, values in chunks.items()}
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **features)
        atomic_write_bytes(path, buffer.getvalue(), durable=False)  # a lost cache file is only recomputed
    return FeatureSet(features, key, path, False, len(files))
