"""k-NN manifold metrics in any feature space: improved precision and recall (Kynkäänniemi et al. 2019),
density and coverage (Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models",
ICML 2020).

Every metric rests on each sample's k-th nearest-neighbour radius within its own set (k excludes the
sample itself):

- precision: share of generated samples inside some reference ball (distance <= radius; torch-fidelity's
  ``metric_prc.py``); recall: the same with the roles swapped.
- density: ``1/(k N) * sum over generated samples of the number of reference balls holding it``; it
  counts how many balls, so a sample in a dense region counts more and one outlier ball counts little.
- coverage: share of reference samples whose ball holds at least one generated sample.

Density and coverage use a strict ``<`` as their reference implementation (clovaai/generative-evaluation-
prdc) does; on continuous features ties have probability zero. Distances are computed in row chunks, so
memory stays at chunk x N instead of torch-fidelity's full N x N matrices; one pass over the
generated-reference distances serves every k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_K = 3
SENSITIVITY_K = (3, 5)  # the k shown side by side: values that move with k are small-N artefacts


@dataclass(frozen=True)
class ManifoldScores:
    k: int
    precision: float
    recall: float
    density: float
    coverage: float

    def to_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "density": self.density,
            "coverage": self.coverage,
        }


def _knn_radii(features: torch.Tensor, ks: tuple[int, ...], chunk: int) -> dict[int, torch.Tensor]:
    """Each sample's k-th neighbour distance within its own set, for every k (index 0 is itself)."""
    deepest = max(ks) + 1
    nearest = [
        torch.cdist(part, features).topk(deepest, dim=1, largest=False).values
        for part in features.split(chunk)
    ]
    sorted_distances = torch.cat(nearest)
    return {k: sorted_distances[:, k] for k in ks}


def manifold_scores(
    generated: np.ndarray, reference: np.ndarray, ks: tuple[int, ...] = SENSITIVITY_K, chunk: int = 2048
) -> dict[int, ManifoldScores]:
    """Precision, recall, density and coverage of ``generated`` against ``reference`` for each k."""
    ks = tuple(sorted(set(ks)))
    if min(len(generated), len(reference)) <= max(ks):
        raise ValueError(f"precision/recall with k={max(ks)} needs more than {max(ks)} images per set")
    gen = torch.from_numpy(np.ascontiguousarray(generated, dtype=np.float32))
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    ref_radii, gen_radii = _knn_radii(ref, ks, chunk), _knn_radii(gen, ks, chunk)
    inside_ref = {k: 0 for k in ks}  # generated samples inside some reference ball (precision)
    balls_holding = {k: 0 for k in ks}  # (generated, reference ball) pairs with strict < (density)
    recalled = {k: torch.zeros(len(ref), dtype=torch.bool) for k in ks}
    nearest_gen = torch.full((len(ref),), float("inf"))  # each reference sample's nearest generated one
    for start in range(0, len(gen), chunk):
        distances = torch.cdist(gen[start : start + chunk], ref)  # (chunk, M)
        nearest_gen = torch.minimum(nearest_gen, distances.min(dim=0).values)
        for k in ks:
            inside_ref[k] += int((distances <= ref_radii[k]).any(dim=1).sum())
            balls_holding[k] += int((distances < ref_radii[k]).sum())
            own = gen_radii[k][start : start + chunk, None]
            recalled[k] |= (distances <= own).any(dim=0)
    return {
        k: ManifoldScores(
            k,
            precision=inside_ref[k] / len(gen),
            recall=int(recalled[k].sum()) / len(ref),  # counts / size in float64, not a float32 mean
            density=balls_holding[k] / (k * len(gen)),
            coverage=int((nearest_gen < ref_radii[k]).sum()) / len(ref),
        )
        for k in ks
    }


def precision_recall(
    generated: np.ndarray, reference: np.ndarray, k: int = DEFAULT_K, chunk: int = 2048
) -> tuple[float, float]:
    """(precision, recall): precision = share of generated images inside the reference manifold."""
    scores = manifold_scores(generated, reference, (k,), chunk)[k]
    return scores.precision, scores.recall
