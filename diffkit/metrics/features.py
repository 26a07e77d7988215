"""Feature extraction through the engines' own networks, one pass per image set, cached on disk.

One Inception pass yields both the pool3 features (2048-d, for FID/KID/PRC-free metrics) and the
1008-way unbiased logits (for IS). The cache key is (image-set content hash, resolution, extractor,
weights sha256, resize mode), so a changed image, other weights or another engine never reuse stale
features; torch-fidelity's own cache keys by name only and is not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffkit.atomic import atomic_write_bytes, check_writable_dir
from diffkit.console import printable
from diffkit.errors import DiffkitError
from diffkit.metrics.images import ImageSet, load_images
from diffkit.metrics.weights import ResolvedWeights

CACHE_FORMAT = 3  # 2: open_rgb (16-bit scaled, alpha on white); 3: EXIF + Lanczos, as training data
DEFAULT_CACHE_DIR = Path("~/.cache/diffkit/features")

ProgressFn = Callable[[int], None]  # called with the number of images just processed


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


# torch's weights-only refusal wraps one fact in advice; the advice (including "re-run with
# weights_only=False", which is exactly what must not be done with a file from elsewhere) is dropped
_TORCH_ADVICE = r"Weights only load failed\..*?trusted source\.|Check the documentation of torch\.load.*"


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """The reason in one line: torch's weights-only refusal is many lines of advice around one fact."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:  # the fact, up to its first sentence end (the rest is how to allowlist the global)
        line = re.split(r"(?<=\.)\s", found.group(1).strip(), maxsplit=1)[0]
    else:
        lines = [part.strip() for part in re.sub(_TORCH_ADVICE, "\n", text, flags=re.DOTALL).splitlines()]
        line = next((part for part in lines if part), type(exc).__name__)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _safe_state_dict(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` dict from an unofficial file, without running any code from it.

    ``weights_only=True`` allows only tensors and plain containers, so a crafted pickle (whose
    ``__reduce__`` would run a shell command) is refused instead of executed; safetensors holds no code.
    """
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load as load_safetensors

        state = load_safetensors(data)
    else:
        # a raw pickle makes torch warn about its protocol before refusing it: the refusal is the message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(f"holds a {type(state).__name__}, not a state dict of tensors")
    return state


def checked_bytes(weights: ResolvedWeights, what: str) -> bytes:
    """The file's bytes, read once and hashed again: the file that is loaded is the file that was checked."""
    shown_path = printable(weights.path)
    try:
        data = Path(weights.path).read_bytes()
    except OSError as exc:
        raise DiffkitError(f"cannot read {what} weights {shown_path}: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != weights.sha256:
        raise DiffkitError(f"{what} weights {shown_path} changed while diffkit was reading it; run again")
    return data


def safe_state_dict(
    weights: ResolvedWeights, what: str, data: bytes | None = None
) -> dict[str, torch.Tensor]:
    """The checked file as tensors, loaded without unpickling anything else; one-line refusal otherwise."""
    data = checked_bytes(weights, what) if data is None else data
    try:
        return _safe_state_dict(data, Path(weights.path))
    except Exception as exc:  # any failure to load safely: refuse, never fall back to full unpickling
        official = "the official file" if weights.official else "not the official file"
        raise DiffkitError(
            f"refusing {what} weights {printable(weights.path)}: {official} (sha256 {weights.sha256[:16]}…) "
            f"and not a plain state dict of tensors (loaded with weights_only=True): {_first_line(exc)}"
        ) from None


def weights_stream(weights: ResolvedWeights, what: str) -> io.BytesIO:
    """The file's content for torch-fidelity's loader, which unpickles with ``weights_only=False``.

    The pinned official file goes to torch-fidelity as it is; any other file is loaded here with
    ``weights_only=True`` (or from safetensors) and re-saved from those plain tensors, so nothing
    but tensors ever reaches the unsafe unpickler. Raises one-line DiffkitErrors.
    """
    data = checked_bytes(weights, what)
    if weights.official:
        return io.BytesIO(data)
    state = safe_state_dict(weights, what, data)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


class TorchFidelityExtractor(Extractor):
    """torch-fidelity's registered extractors (``inception-v3-compat``, ``vgg16``) with a weights file."""

    def __init__(
        self, extractor: str, layers: tuple[str, ...], weights: ResolvedWeights, device: torch.device
    ):
        from torch_fidelity.utils import create_feature_extractor

        self.name = f"torch-fidelity/{extractor}"
        self.resize = "tf1-bilinear"  # interpolate_bilinear_2d_like_tensorflow1x inside the extractor
        self.outputs = layers
        self.weights = weights
        self.device = device
        # torch-fidelity calls torch.load(path, weights_only=False) on whatever it is given: it only
        # ever gets a stream that is the pinned file or was re-saved from safely loaded tensors
        stream = weights_stream(weights, extractor)
        try:
            self.model = create_feature_extractor(
                extractor, list(layers), cuda=False, verbose=False, feature_extractor_weights_path=stream
            ).to(device)
        except Exception as exc:  # a state dict for another network (missing or misshapen keys)
            raise DiffkitError(
                f"cannot load {extractor} weights from {printable(weights.path)}: {_first_line(exc)}"
            ) from None

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


def default_cache_dir() -> Path | None:
    """The default feature cache folder, created; None when it cannot be written (nothing is cached)."""
    try:
        return check_writable_dir(DEFAULT_CACHE_DIR.expanduser(), "the feature cache")
    except DiffkitError:
        return None


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
    """The cached features at ``path``, or None for anything that is not a complete, readable entry."""
    if path.is_symlink() or not path.is_file():
        return None  # a link could point anywhere: never read through it (the write replaces the link)
    try:
        with np.load(path, allow_pickle=False) as data:
            features = {name: np.asarray(data[name]) for name in outputs}
    except Exception:  # truncated (BadZipFile, EOFError, zlib.error), garbled or from another version
        return None  # a cache entry is only a shortcut: recompute and overwrite
    if any(array.ndim != 2 or array.shape[0] != n for array in features.values()):
        return None
    return features


def _store_cached(path: Path, features: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **features)
    # the folder was checked before extraction; a failed write (disk full) only costs a recompute
    with contextlib.suppress(OSError):
        # temp file + os.replace: a symlink at ``path`` is replaced by the new file, its target untouched
        atomic_write_bytes(path, buffer.getvalue(), durable=False)


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
        _store_cached(path, features)
    return FeatureSet(features, key, path, False, len(files))


def image_features(
    images: np.ndarray, extractor: Extractor, *, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Features of in-memory uint8 images (N, H, W, 3), batched as :func:`extract_features` does.

    For images that exist only in memory (samples drawn during training): the same network and the
    same float32 output as for files, without the PNG round trip (lossless for uint8) and uncached,
    since such samples are never seen twice.
    """
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in extractor.outputs}
    for start in range(0, len(images), batch_size):
        for name, value in extractor(np.asarray(images[start : start + batch_size])).items():
            chunks[name].append(value)
    return {name: np.concatenate(values).astype(np.float32) for name, values in chunks.items()}
