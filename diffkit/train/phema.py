"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models",
section 3 and appendix C): choose the EMA length after training.

While training (``--phema-every-kimg K``), two power-function EMAs of the weights are kept, with relative
standard deviations ``sigma_rel`` = 0.05 and 0.10, and both are saved every K kimg. A power-function EMA
at step t averages the weights of steps tau <= t with the profile ``p(tau) = (gamma + 1) tau^gamma /
t^(gamma + 1)``: its width grows with the run (``sigma_rel`` is the profile's standard deviation over
t), and its per-step decay is ``beta_t = (1 - 1/t)^(gamma + 1)`` (eq. 3). Every saved snapshot is such
a profile, so any other profile (another ``sigma_rel``, at any saved time) is approximated by the linear
combination of snapshots whose profile is nearest in L2: the coefficients solve ``A x = b`` with A the
Gram matrix of the stored profiles and b their inner products with the target (closed form below).
``diffkit phema RUN --sigma-rel S`` (:mod:`diffkit.phema`) writes that combination as an EMA snapshot,
which ``diffkit sample --snapshot`` and ``diffkit eval`` use like any other.

The default EMA of ``diffkit train`` (half-life 5 % of the images seen) is close to sigma_rel 0.07: an
exponential average with half-life h has a standard deviation of h / ln 2 = 0.072 t.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffkit.errors import DiffkitError
from diffkit.train.ema import blend_into

# The two profiles kept while training (EDM2's choice): a short and a long one bracket the usual optimum.
TRAINING_SIGMA_RELS = (0.05, 0.10)
# sigma_rel is sqrt((g + 1) / ((g + 2)^2 (g + 3))); it reaches 0.2887 (= 1 / sqrt(12)) as gamma -> 0.
MAX_SIGMA_REL = 0.28
# The other end: gamma grows as 1 / sigma_rel (about 1000 at 0.001), and below ~1e-154 the cubic's
# sigma_rel^-2 is no longer a float. An average over a thousandth of the run is its last weights anyway.
MIN_SIGMA_REL = 0.001


def check_sigma_rel(sigma_rel: float) -> None:
    """``--sigma-rel`` in [MIN_SIGMA_REL, MAX_SIGMA_REL] (a NaN is not)."""
    if not MIN_SIGMA_REL <= sigma_rel <= MAX_SIGMA_REL:
        raise DiffkitError(
            f"--sigma-rel must be in [{MIN_SIGMA_REL:g}, {MAX_SIGMA_REL:g}] (got {sigma_rel:g})"
        )


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of the power-function profile whose relative std is ``sigma_rel`` (EDM2, eq. 4).

    ``sigma_rel^2 = (g + 1) / ((g + 2)^2 (g + 3))`` is the cubic ``g^3 + 7 g^2 + (16 - s) g + (12 - s) = 0``
    with ``s = sigma_rel^-2``; the largest real root is the one with ``g > -1``.
    """
    check_sigma_rel(sigma_rel)
    s = sigma_rel**-2
    return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def power_beta(gamma: float, t: int) -> float:
    """Decay of the update at step ``t`` (1-based): ``(1 - 1/t)^(gamma + 1)``, 0 at t = 1 (the EMA starts
    as the weights after the first step)."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


def profile_dot(t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray) -> np.ndarray:
    """Inner products of power-function profiles, ``integral_0^inf p_a(tau) p_b(tau) dtau``, elementwise
    (broadcasting). With ``t_a <= t_b``: ``(g_a + 1)(g_b + 1) (t_a / t_b)^g_b / ((g_a + g_b + 1) t_b)``."""
    t_a, t_b = np.asarray(t_a, np.float64), np.asarray(t_b, np.float64)
    gamma_a, gamma_b = np.asarray(gamma_a, np.float64), np.asarray(gamma_b, np.float64)
    exponent = np.where(t_a < t_b, gamma_b, -gamma_a)
    numerator = (gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** exponent
    return numerator / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


@dataclass(frozen=True)
class Fit:
    """Coefficients of the stored profiles and how well their sum matches the target profile."""

    coefficients: np.ndarray
    relative_error: float  # ||sum x_i p_i - p_target|| / ||p_target||


def solve_coefficients(t_in: np.ndarray, gamma_in: np.ndarray, t_out: float, gamma_out: float) -> Fit:
    """The least-squares combination of the stored profiles (t_in, gamma_in) nearest the target profile."""
    t_in, gamma_in = np.asarray(t_in, np.float64), np.asarray(gamma_in, np.float64)
    gram = profile_dot(t_in[:, None], gamma_in[:, None], t_in[None, :], gamma_in[None, :])
    target = profile_dot(t_in, gamma_in, np.float64(t_out), np.float64(gamma_out))
    # lstsq rather than solve: two snapshots with the same profile make the Gram matrix singular.
    x = np.linalg.lstsq(gram, target, rcond=None)[0]
    norm = float(profile_dot(t_out, gamma_out, t_out, gamma_out))
    residual = max(norm - 2.0 * float(x @ target) + float(x @ gram @ x), 0.0)
    return Fit(x, math.sqrt(residual / norm))


class PowerEMA:
    """The power-function EMAs of ``sigma_rels`` that training keeps (rank 0), updated after every step."""

    def __init__(self, model: nn.Module, sigma_rels: tuple[float, ...] = TRAINING_SIGMA_RELS) -> None:
        self.sigma_rels = sigma_rels
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in sigma_rels)
        self.models = [copy.deepcopy(model).eval().requires_grad_(False) for _ in sigma_rels]

    @torch.no_grad()
    def update(self, model: nn.Module, t: int) -> None:
        """Blend the live weights in after step ``t`` (1-based: the number of steps taken so far)."""
        for gamma, average in zip(self.gammas, self.models, strict=True):
            blend_into(average, model, 1.0 - power_beta(gamma, t))

    def state_dict(self) -> dict[str, Any]:
        return {"sigma_rels": list(self.sigma_rels), "models": [m.state_dict() for m in self.models]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if [float(s) for s in state["sigma_rels"]] != list(self.sigma_rels):
            raise DiffkitError(
                f"the saved post-hoc EMA keeps sigma_rel {state['sigma_rels']}, not {self.sigma_rels}"
            )
        for average, saved in zip(self.models, state["models"], strict=True):
            average.load_state_dict(saved)


@dataclass(frozen=True)
class StoredProfile:
    """One saved power-function EMA snapshot: its file, its sigma_rel and the step it was taken after."""

    path: Path
    sigma_rel: float
    step: int
    nimg: int


@dataclass
class Reconstruction:
    """Weights of the target profile, the snapshots used, their coefficients and the fit's error."""

    state: dict[str, torch.Tensor]
    used: list[StoredProfile]
    fit: Fit
    gamma: float


def reconstruct(stored: list[StoredProfile], sigma_rel: float, step: int, load: Any) -> Reconstruction:
    """The EMA of ``sigma_rel`` after ``step`` from the snapshots taken at or before it.

    ``load(path)`` gives a snapshot's tensors. They are summed in float64 and returned in the dtype of the
    first snapshot, so float32 rounding does not grow with the number of snapshots.
    """
    used = sorted((p for p in stored if p.step <= step), key=lambda p: (p.step, p.sigma_rel))
    if not used:
        raise DiffkitError(f"no post-hoc EMA snapshot at or before step {step}")
    gamma = sigma_rel_to_gamma(sigma_rel)
    fit = solve_coefficients(
        np.array([p.step for p in used]),
        np.array([sigma_rel_to_gamma(p.sigma_rel) for p in used]),
        step,
        gamma,
    )
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for profile, coefficient in zip(used, fit.coefficients.tolist(), strict=True):
        for name, value in load(profile.path).items():
            dtypes.setdefault(name, value.dtype)
            term = value.to(torch.float64) * coefficient
            total[name] = total[name] + term if name in total else term
    state = {name: value.to(dtypes[name]).contiguous() for name, value in total.items()}
    return Reconstruction(state, used, fit, gamma)
