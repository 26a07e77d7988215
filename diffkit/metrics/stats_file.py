"""Reference statistics as files: diffkit's own ``.npz``, and pytorch-fid's ``mu``/``sigma`` files.

A statistics file holds the mean and covariance of a reference set's features, which is all FID needs,
so a large reference (or one that cannot be shared) is summarised once and compared against many times.
diffkit's file keeps the arrays under pytorch-fid's names (``mu``, ``sigma``: pytorch-fid reads it too)
and adds ``diffkit_meta``, a JSON string: N, the feature space, the extractor, its resize, the weights'
sha256 and the image preparation. Before any comparison those are checked against the evaluation's own,
and any difference is refused: an FID between features of different networks, weights or preparations
is a number about the pipelines, not the images.

A file without ``diffkit_meta`` (pytorch-fid's ``--save-stats``, TTUR, clean-fid's stats) is read as
2048-d Inception pool3 statistics whose preparation and N are unknown; the result says so.

Statistics are enough for FID only: KID is a kernel average over pairs of images and precision, recall,
density and coverage need each reference image's nearest-neighbour radius, so all need the features.
Files are read with ``allow_pickle=False`` and written atomically.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffkit.atomic import atomic_write_bytes
from diffkit.console import printable
from diffkit.errors import DiffkitError
from diffkit.metrics.fid import GaussianStats

FORMAT = "diffkit-reference-stats"
VERSION = 1
META_KEY = "diffkit_meta"
# what must be equal between the file and the evaluation for an FID between them to mean anything
MATCHED_FIELDS = ("features", "extractor", "resize", "weights_sha256", "resolution", "dims")
NEEDS_FEATURES = {
    "kid": "KID is an average of a kernel over pairs of images (unbiased MMD), which a mean and a "
    "covariance do not determine",
    "prc": "precision, recall, density and coverage need every reference image's k-nearest-neighbour "
    "radius, which a mean and a covariance do not hold",
    "memorization": "the memorization check compares each generated image with reference images",
}


@dataclass(frozen=True)
class ReferenceStats:
    """A loaded statistics file; ``meta`` is None for a pytorch-fid file (preparation and N unknown)."""

    path: Path
    stats: GaussianStats
    meta: dict[str, Any] | None

    @property
    def n(self) -> int | None:
        return self.stats.n if self.meta is not None else None

    @property
    def source(self) -> str:
        return "diffkit" if self.meta is not None else "pytorch-fid"


def is_stats_path(path: Path | None) -> bool:
    """A ``--reference`` that names a statistics file (``.npz``) rather than a folder of images."""
    return path is not None and path.suffix.lower() == ".npz" and not path.is_dir()


def save_stats(path: Path, features: np.ndarray, meta: dict[str, Any]) -> GaussianStats:
    """Write the mean and covariance of ``features`` with ``meta`` (see the module docstring)."""
    features = np.asarray(features)
    # the mean exactly as the folder route forms it (in the features' dtype), then stored losslessly
    mu = np.mean(features, axis=0).astype(np.float64)
    sigma = np.cov(features, rowvar=False)
    full = {"format": FORMAT, "version": VERSION, "n": len(features), "dims": features.shape[1], **meta}
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma, **{META_KEY: np.array(json.dumps(full, sort_keys=True))})
    atomic_write_bytes(path, buffer.getvalue())
    return GaussianStats(mu, sigma, len(features))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    shown = printable(path)
    if not path.is_file():
        raise DiffkitError(f"reference statistics {shown} is not a file")
    if not zipfile.is_zipfile(path):  # np.load would take anything else for a pickle
        raise DiffkitError(f"cannot read reference statistics {shown}: not an .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DiffkitError(f"cannot read reference statistics {shown}: {exc}") from None
    except ValueError:  # an object array inside: that is a pickle, never loaded
        raise DiffkitError(
            f"refusing reference statistics {shown}: it holds pickled (object) arrays, which diffkit "
            "never loads; statistics are plain float arrays"
        ) from None


def load_stats(path: Path) -> ReferenceStats:
    """Read diffkit's or pytorch-fid's statistics file; one-line DiffkitErrors for anything else."""
    arrays = _read_arrays(path)
    shown = printable(path)
    missing = [name for name in ("mu", "sigma") if name not in arrays]
    if missing:
        raise DiffkitError(
            f"reference statistics {shown} has no {' or '.join(missing)}: expected diffkit's "
            "(--save-stats) or pytorch-fid's .npz with mu and sigma"
        )
    mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise DiffkitError(
            f"reference statistics {shown}: mu {mu.shape} and sigma {sigma.shape} do not match"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DiffkitError(f"reference statistics {shown} holds NaN or infinite values")
    meta = None
    if META_KEY in arrays:
        try:
            meta = json.loads(str(arrays[META_KEY]))
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DiffkitError(f"reference statistics {shown}: unreadable {META_KEY}")
        if meta.get("version") != VERSION:
            raise DiffkitError(
                f"reference statistics {shown} is version {meta.get('version')}; this diffkit reads {VERSION}"
            )
    n = int(meta["n"]) if meta is not None else 0
    return ReferenceStats(path, GaussianStats(mu, sigma, n), meta)


def check_matches(reference: ReferenceStats, expected: dict[str, Any]) -> None:
    """Refuse a comparison whose features were made differently from the file's (one line, each field)."""
    shown = printable(reference.path)
    if reference.meta is None:
        dims = reference.stats.mu.shape[0]
        if expected["features"] != "inception":
            raise DiffkitError(
                f"{shown} is a pytorch-fid statistics file (assumed Inception pool3); --features "
                f"{expected['features']} needs diffkit's own file (--save-stats)"
            )
        if dims != expected["dims"]:
            raise DiffkitError(
                f"{shown} holds {dims}-d statistics; Inception pool3 features are {expected['dims']}-d "
                "(pytorch-fid's --dims values other than 2048 are other layers, not comparable)"
            )
        return
    found = {field: reference.meta.get(field) for field in MATCHED_FIELDS}
    differ = [field for field in MATCHED_FIELDS if found[field] != expected[field]]
    if differ:
        pairs = "; ".join(f"{field}: file {found[field]!r}, now {expected[field]!r}" for field in differ)
        raise DiffkitError(
            f"reference statistics {shown} were made differently ({pairs}): an FID across them compares "
            "pipelines, not images; remake the file with these settings (--save-stats)"
        )


def stats_caveats(reference: ReferenceStats, n: int) -> list[str]:
    """What a statistics reference changes about the numbers."""
    shown = printable(reference.path)
    if reference.meta is None:
        return [
            f"The reference is the pytorch-fid statistics file {shown}: its image preparation (resize, "
            "crop, format), its Inception port and its N are unknown, so this FID is comparable neither "
            "with diffkit's FID against the images themselves nor, necessarily, with the value published "
            "with the file; FID-infinity and the bootstrap cover only the generated side."
        ]
    meta = reference.meta
    return [
        f"The reference is the statistics file {shown} ({meta['n']} images of "
        f"{printable(str(meta.get('reference', '?')))}, {meta['features']} features, "
        f"{meta['resolution']} px, {meta['resize']}; checked against this evaluation's settings)."
    ]


def unavailable_from_stats(metrics: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The asked metrics that a statistics file cannot give, with the reason for each."""
    return {name: NEEDS_FEATURES[name] for name in metrics if name in NEEDS_FEATURES}
