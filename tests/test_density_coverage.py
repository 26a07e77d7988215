"""Density and coverage (Naeem et al. 2020) beside precision and recall, for several k at once.

The reference values are computed here in plain numpy from the definitions (full distance matrices,
float64), independently of diffkit's chunked torch code; the eval helper is checked to report them
with k and its k = 3 / 5 sensitivity, in the chosen space.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffkit.eval.config import EvalConfig
from diffkit.eval.result import EvalResult
from diffkit.eval.run import _Features, _prc
from diffkit.metrics.prc import manifold_scores, precision_recall


def _direct(generated: np.ndarray, reference: np.ndarray, k: int) -> dict[str, float]:
    """The four metrics straight from their definitions, with full N x M distance matrices."""

    def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))

    real_to_real, fake_to_fake = distances(reference, reference), distances(generated, generated)
    fake_to_real = distances(generated, reference)  # (N, M)
    real_radius = np.sort(real_to_real, axis=1)[:, k]  # column 0 is the point itself
    fake_radius = np.sort(fake_to_fake, axis=1)[:, k]
    precision = np.mean([(fake_to_real[j] <= real_radius).any() for j in range(len(generated))])
    recall = np.mean([(fake_to_real[:, i] <= fake_radius).any() for i in range(len(reference))])
    density = sum((fake_to_real[j] < real_radius).sum() for j in range(len(generated))) / (k * len(generated))
    coverage = np.mean([fake_to_real[:, i].min() < real_radius[i] for i in range(len(reference))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def _features(seed: int, n: int, shift: float, dims: int = 24) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, dims)) + shift).astype(np.float32)


@pytest.mark.parametrize("chunk", [7, 4096])  # several chunks, and one: the chunking must not matter
def test_density_and_coverage_equal_a_direct_numpy_computation(chunk: int) -> None:
    generated, reference = _features(1, 70, 0.4), _features(2, 60, 0.0)
    # near-copies: each sits deep inside its original's ball (exact copies would tie with some radii,
    # and a tie is decided by float rounding, not by the definition)
    generated[:5] = reference[:5] + 1e-3 * _features(9, 5, 0.0)
    scores = manifold_scores(generated, reference, ks=(3, 5), chunk=chunk)
    for k in (3, 5):
        expected = _direct(generated.astype(np.float64), reference.astype(np.float64), k)
        assert scores[k].k == k
        for name, value in expected.items():
            assert getattr(scores[k], name) == pytest.approx(value, abs=1e-12), (k, name)
    # not a degenerate case: the metrics differ from each other and move with k
    assert len({round(v, 6) for v in scores[3].to_dict().values()}) == 4
    assert scores[3].density != scores[5].density
    assert precision_recall(generated, reference, k=3, chunk=chunk) == (scores[3].precision, scores[3].recall)


def test_mode_collapse_onto_a_few_reference_samples_keeps_precision_but_loses_coverage() -> None:
    reference = _features(3, 40, 0.0)
    # every generated sample is a near-copy of one of 8 reference samples: realistic, and diverse it is not
    generated = np.repeat(reference[:8], 5, axis=0) + 1e-3 * _features(8, 40, 0.0)
    scores = manifold_scores(generated, reference, ks=(3,))[3]
    expected = _direct(generated.astype(np.float64), reference.astype(np.float64), 3)
    assert scores.to_dict() == pytest.approx(expected, abs=1e-12)
    assert scores.precision == 1.0 and scores.recall == pytest.approx(8 / 40)  # recall sees the collapse
    assert 8 / 40 <= scores.coverage < 1.0  # the 8 copied balls, and the neighbours' balls that hold them


def test_too_few_images_for_k_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="k=5 needs more than 5 images"):
        manifold_scores(_features(1, 5, 0.0), _features(2, 9, 0.0), ks=(3, 5))


@pytest.mark.parametrize("space", ["inception", "dinov2"])
def test_eval_reports_k_its_sensitivity_and_the_space(space: str, tmp_path) -> None:
    generated, reference = _features(4, 30, 0.3, dims=16), _features(5, 25, 0.0, dims=16)
    config = EvalConfig(generated=tmp_path, reference=tmp_path, features=space, prc_k=3)
    result = EvalResult(30, 25, "torch-fidelity", "", ["prc"], "g", "r", 32, features=space)
    _prc(config, result, _Features(prc_gen=generated, prc_ref=reference), None)
    for k in (3, 5):
        expected = _direct(generated.astype(np.float64), reference.astype(np.float64), k)
        assert result.prc_by_k[str(k)] == pytest.approx(expected, abs=1e-12)
    assert (result.precision, result.recall, result.density, result.coverage) == tuple(
        result.prc_by_k["3"].values()
    )
    network = "VGG16 fc2" if space == "inception" else "DINOv2 ViT-L/14"
    assert result.prc_network == network and result.prc_k == 3
    caveats = "\n".join(result.caveats)
    assert f"in {network} features, k=3, N=30, M=25" in caveats
    assert "k sensitivity at N=30, M=25, k=3 → 5" in caveats
    summary = "\n".join(result.summary_lines())
    assert f"(k=3, {network})" in summary and "at k=5:" in summary and "density" in summary
    data = result.to_dict()
    assert data["prc_by_k"].keys() == {"3", "5"} and data["coverage"] == result.coverage
