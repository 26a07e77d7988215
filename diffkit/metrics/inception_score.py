"""Inception Score from unbiased logits, as torch-fidelity's ``metric_isc.py`` computes it.

Samples are shuffled with ``np.random.RandomState(seed)``, split into ``splits`` chunks of N/splits
images, and ``exp(mean KL(p(y|x) || p(y)))`` is taken per chunk, in float64.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SPLITS = 10
TORCH_FIDELITY_SEED = 2020


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(
    logits: np.ndarray, splits: int = DEFAULT_SPLITS, shuffle: bool = True, seed: int = TORCH_FIDELITY_SEED
) -> tuple[float, float]:
    """(mean, std over splits) of the Inception Score of (N, classes) logits."""
    logits = np.asarray(logits)
    n = len(logits)
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images (got {n})")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = _log_softmax(logits.astype(np.float64))
    p = np.exp(log_p)
    scores = []
    for index in range(splits):
        chunk = slice(index * n // splits, (index + 1) * n // splits)
        log_q = np.log(p[chunk].mean(axis=0, keepdims=True))
        kl = (p[chunk] * (log_p[chunk] - log_q)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
