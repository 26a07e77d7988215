"""Finding the feature-extractor weights, offline first, each file checked against its pinned sha256.

Order: ``--weights`` (or ``--vgg-weights``), then the environment variable, then the engine's own cache
(where torch-fidelity / clean-fid / torchvision would look), then one download into that cache when
online. Nothing else in ``diffkit eval`` touches the network.

Files given explicitly (option or environment) may differ from the official file, e.g. weights made
for tests; they are used, and the result says loudly that the numbers are not comparable with
published ones. Such a file is never unpickled: it must be a plain state dict that loads with
``torch.load(weights_only=True)`` (or a ``.safetensors`` file), see
:func:`diffkit.metrics.features.weights_stream`; only the pinned official file (sha256 match, checked
before any load) goes through torch-fidelity's own loader. clean-fid's file is TorchScript, read by
torch's C++ loader, not by Python's pickle.

A file in an engine cache must match its pin: a mismatch there means a corrupt or partial download,
and using it silently would produce wrong numbers.
"""

from __future__ import annotations

import hashlib
import os
import platform
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from diffkit.atomic import atomic_open
from diffkit.console import printable
from diffkit.errors import DiffkitError

INCEPTION_ENV = "DIFFKIT_INCEPTION_WEIGHTS"
VGG16_ENV = "DIFFKIT_VGG16_WEIGHTS"
DINOV2_ENV = "DIFFKIT_DINOV2_WEIGHTS"
OFFLINE_ENV = "DIFFKIT_OFFLINE"  # "1" skips the download attempt entirely


def _torch_hub_checkpoints() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _cleanfid_dir() -> Path:
    # clean-fid hard-codes this directory in cleanfid/features.py (feature_extractor)
    return Path("./") if platform.system() == "Windows" else Path("/tmp")


@dataclass(frozen=True)
class WeightsSpec:
    """One official weights file: its name, pinned sha256, origin and the engine cache that holds it."""

    label: str
    filename: str
    sha256: str | None  # None: no verified pin yet, so no file counts as official (and none is downloaded)
    url: str
    size_bytes: int | None
    env_var: str
    cache: str  # "torch-hub" or "clean-fid"
    flag: str = "--weights"  # the eval option that passes this file

    def cache_dir(self) -> Path:
        return _torch_hub_checkpoints() if self.cache == "torch-hub" else _cleanfid_dir()

    def cache_path(self) -> Path:
        return self.cache_dir() / self.filename


# The pinned sha256 values start with the 8 hex digits torch hub puts in the file names; the same
# values are pinned by k-diffusion (clean-fid file) and by many evaluation setups (all three).
TORCH_FIDELITY_INCEPTION = WeightsSpec(
    label="torch-fidelity InceptionV3 (2015-12-05)",
    filename="weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    size_bytes=95_628_359,
    env_var=INCEPTION_ENV,
    cache="torch-hub",
)
CLEAN_FID_INCEPTION = WeightsSpec(
    label="clean-fid InceptionV3 TorchScript (2015-12-05)",
    filename="inception-2015-12-05.pt",
    sha256="f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
    url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    size_bytes=95_607_719,
    env_var=INCEPTION_ENV,
    cache="clean-fid",
)
VGG16 = WeightsSpec(
    label="torchvision VGG16 (VGG16_Weights.IMAGENET1K_V1)",
    filename="vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    size_bytes=553_433_881,
    env_var=VGG16_ENV,
    cache="torch-hub",
    flag="--vgg-weights",
)
# Meta's DINOv2 ViT-L/14 backbone, the file torch.hub's ``dinov2_vitl14`` (and so dgm-eval) caches. Its
# sha256 could not be verified from where this was written (no download possible), and a pin copied
# from memory would be worse than none: until one is filled in here, every DINOv2 file is used as an
# unpinned file (hashed, loaded without unpickling, its sha256 recorded) and marked not comparable.
DINOV2_VITL14 = WeightsSpec(
    label="DINOv2 ViT-L/14 (Meta, LVD-142M)",
    filename="dinov2_vitl14_pretrain.pth",
    sha256=None,
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
    size_bytes=None,
    env_var=DINOV2_ENV,
    cache="torch-hub",
    flag="--dinov2-weights",
)


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    sha256: str
    source: str  # "option", "environment", "cache", "download"
    official: bool  # sha256 equals the pinned one

    def to_dict(self) -> dict[str, object]:
        return {
            "path": printable(self.path),
            "sha256": self.sha256,
            "source": self.source,
            "official": self.official,
        }


_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so a 100 MB file is hashed once per process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _sha_memo:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _sha_memo[key] = digest.hexdigest()
    return _sha_memo[key]


def missing_message(spec: WeightsSpec, why: str) -> str:
    if spec.sha256 is None:
        pin = "sha256 not yet pinned by diffkit: its sha256 is recorded with every result"
    else:
        pin = f"sha256 {spec.sha256}"
    size = f", {spec.size_bytes:,} bytes" if spec.size_bytes else ""
    return (
        f"{spec.label} weights not found ({why}): need {spec.filename} ({pin}{size}, "
        f"from {spec.url}); put it at {spec.cache_path()} "
        f"or pass its path with {spec.flag} / {spec.env_var}"
    )


def _download(spec: WeightsSpec, timeout_s: float = 30.0) -> Path:
    target = spec.cache_path()
    digest = hashlib.sha256()
    with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, atomic_open(target, "wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != spec.sha256:
            # raising inside atomic_open discards the temp file: nothing corrupt lands in the cache
            raise DiffkitError(
                f"downloaded {spec.filename} has sha256 {digest.hexdigest()}, expected {spec.sha256}; "
                f"not saved. Download it by hand from {spec.url} and put it at {target}"
            )
    return target


def resolve_weights(
    spec: WeightsSpec, explicit: Path | None = None, allow_download: bool | None = None
) -> ResolvedWeights:
    """Find ``spec``'s file (see the module docstring for the order); raise one DiffkitError if none."""
    for candidate, source in ((explicit, "option"), (os.environ.get(spec.env_var) or None, "environment")):
        if candidate is None:
            continue
        path = Path(candidate).expanduser()
        if not path.is_file():
            flag = spec.flag if source == "option" else spec.env_var
            raise DiffkitError(
                f"{flag} points to {path}, which is not a file; " + missing_message(spec, "bad path")
            )
        sha = file_sha256(path)
        return ResolvedWeights(path, sha, source, sha == spec.sha256)

    cached = spec.cache_path()
    if cached.is_file():
        sha = file_sha256(cached)
        if spec.sha256 is None:  # nothing to check it against: used, hashed, marked not official
            return ResolvedWeights(cached, sha, "cache", False)
        if sha != spec.sha256:
            raise DiffkitError(
                f"{cached} has sha256 {sha}, expected {spec.sha256} (corrupt or partial download?); "
                f"delete it and put the official {spec.filename} there"
            )
        return ResolvedWeights(cached, sha, "cache", True)

    if allow_download is None:
        allow_download = os.environ.get(OFFLINE_ENV, "") not in ("1", "true", "yes")
    if not allow_download:
        raise DiffkitError(missing_message(spec, f"offline: {OFFLINE_ENV}=1"))
    if spec.sha256 is None:  # a download that cannot be verified is not made
        raise DiffkitError(missing_message(spec, "no pinned sha256 to verify a download against"))
    try:
        path = _download(spec)
    except DiffkitError:
        raise
    except (OSError, ValueError) as exc:  # URLError is an OSError; no network is the common case
        http_error = isinstance(exc, urllib.error.HTTPError)
        reason = f"HTTP {exc.code}" if http_error else getattr(exc, "reason", exc)
        raise DiffkitError(missing_message(spec, f"download failed: {reason}")) from None
    return ResolvedWeights(path, spec.sha256, "download", True)
