"""Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifolds in VGG16 fc2 features.

Same definition as torch-fidelity's ``metric_prc.py``: a sample lies inside the other set's manifold
when its distance to some sample of that set is at most that sample's k-th nearest-neighbour radius
(k excludes the sample itself). Distances are computed in row chunks so memory stays at
chunk x N instead of torch-fidelity's full N x N matrices.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 3


def _knn_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = [torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)]
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    inside = [(torch.cdist(part, support) <= radii).any(dim=1) for part in queries.split(chunk)]
    return float(torch.cat(inside).float().mean().item())


def precision_recall(
    generated: np.ndarray, reference: np.ndarray, k: int = DEFAULT_K, chunk: int = 2048
) -> tuple[float, float]:
    """(precision, recall): precision = share of generated images inside the reference manifold."""
    if min(len(generated), len(reference)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
    gen = torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float32))
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    precision = _coverage(gen, ref, _knn_radii(ref, k, chunk), chunk)
    recall = _coverage(ref, gen, _knn_radii(gen, k, chunk), chunk)
    return precision, recall
