"""The Gaussian diffusion process: closed-form forward noising, prediction targets and the training loss.

Forward process (Ho et al. 2020, eq. 4): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.
The network predicts either ``eps`` or ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (Salimans & Ho
2022); v stays well-scaled at both ends of the schedule, where eps-prediction has to divide by
``sqrt(abar_t) -> 0`` to recover x_0. ``edm`` is EDM's preconditioning (Karras et al. 2022, eq. 7 and
Table 1) in VP units: with ``a = sqrt(abar_t)``, ``s = sqrt(1 - abar_t)``, ``sigma = s / a`` and
``r = sqrt(s^2 + sigma_data^2 a^2)``, the network sees ``c_in x_t/a = x_t / r`` and its output F gives
``D = c_skip x_t/a + c_out F`` with ``c_skip x_t/a = sigma_data^2 a x_t / r^2`` and
``c_out = s sigma_data / r``. At ``sigma_data = 1`` this is v-prediction with F = -v (r = 1); EDM's
0.5 (the spread of images in [-1, 1]) scales the input up at low noise and trusts the skip more there.
The loss is weighted with min-SNR-gamma (Hang et al. 2023).
Timesteps are drawn uniformly, or (``timestep_sampling="lognormal"``) from EDM's noise-level
distribution (Karras et al. 2022, eq. 7 / Table 1): ``ln sigma ~ N(P_mean, P_std^2)`` with the VP
schedule's ``sigma_t = sqrt((1 - abar_t) / abar_t)`` (x_t / sqrt(abar_t) = x_0 + sigma_t eps), each
draw rounded to the timestep nearest in ln sigma.

Everything here runs in float32 even under autocast: the model output is cast up before the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from diffkit.diffusion.names import (  # noqa: F401  (PredictionName re-exported)
    PREDICTIONS,
    TIMESTEP_SAMPLINGS,
    PredictionName,
)
from diffkit.diffusion.schedules import NoiseSchedule, make_schedule
from diffkit.errors import DiffkitError

DEFAULT_MIN_SNR_GAMMA = 5.0
# EDM's training noise levels (Karras et al. 2022, Table 1), tuned there for data in [-1, 1].
LOGNORMAL_P_MEAN = -1.2
LOGNORMAL_P_STD = 1.2
# EDM's sigma_data for images in [-1, 1] (Karras et al. 2022, Table 1), used by prediction="edm".
EDM_SIGMA_DATA = 0.5

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def min_snr_weight(
    snr: torch.Tensor, prediction: str, gamma: float | None, sigma_data: float = EDM_SIGMA_DATA
) -> torch.Tensor:
    """Per-timestep loss weight that makes each objective equal to ``min(snr, gamma) * |x0 error|^2``.

    ``|eps error|^2 = snr * |x0 error|^2``, ``|v error|^2 = (snr + 1) * |x0 error|^2`` and
    ``|F error|^2 = |x0 error|^2 / c_out^2`` with ``c_out^2 = sigma_data^2 / (1 + sigma_data^2 snr)``, hence
    ``min(snr, gamma) / snr`` for eps, ``min(snr, gamma) / (snr + 1)`` for v and ``min(snr, gamma) c_out^2``
    for edm. ``gamma=None`` gives the unweighted loss (all ones; for edm that is EDM's own
    ``lambda(sigma) = 1 / c_out^2`` on the x0 error).
    """
    if gamma is None:
        return torch.ones_like(snr)
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    if prediction == "edm":
        return clipped * sigma_data**2 / (1.0 + sigma_data**2 * snr)
    raise DiffkitError(f"unknown prediction type {prediction!r}; use one of: {', '.join(PREDICTIONS)}")


@dataclass
class GaussianDiffusion:
    """A noise schedule plus what the network predicts; owns no weights and no optimiser."""

    schedule: NoiseSchedule
    prediction: str = "v"
    min_snr_gamma: float | None = DEFAULT_MIN_SNR_GAMMA
    timestep_sampling: str = "uniform"
    sigma_data: float = EDM_SIGMA_DATA  # prediction="edm" only
    _device_tables: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise DiffkitError(
                f"unknown prediction type {self.prediction!r}; use one of: {', '.join(PREDICTIONS)}"
            )
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise DiffkitError(
                f"unknown timestep sampling {self.timestep_sampling!r}; "
                f"use one of: {', '.join(TIMESTEP_SAMPLINGS)}"
            )

    @classmethod
    def create(
        cls,
        schedule: str = "cosine",
        prediction: str = "v",
        num_timesteps: int = 1000,
        min_snr_gamma: float | None = DEFAULT_MIN_SNR_GAMMA,
        timestep_sampling: str = "uniform",
        sigma_data: float = EDM_SIGMA_DATA,
    ) -> GaussianDiffusion:
        return cls(
            make_schedule(schedule, num_timesteps), prediction, min_snr_gamma, timestep_sampling, sigma_data
        )

    @property
    def num_timesteps(self) -> int:
        return self.schedule.num_timesteps

    # Per-timestep coefficients: computed in float64 once, cast to float32 once per device (MPS has no
    # float64) and gathered by index, so no host-device sync happens inside the training step.
    def _tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._device_tables:
            abar = self.schedule.alphas_cumprod
            snr = self.schedule.snr
            sd2 = self.sigma_data**2
            r = ((1.0 - abar) + sd2 * abar).sqrt()  # EDM's sqrt(sigma^2 + sigma_data^2), times sqrt(abar)
            f64 = {
                "sqrt_abar": abar.sqrt(),
                "sqrt_one_minus_abar": (1.0 - abar).sqrt(),
                "weight": min_snr_weight(snr, self.prediction, self.min_snr_gamma, self.sigma_data),
                "edm_in": 1.0 / r,  # c_in / sqrt(abar): x_t -> the network's input
                "edm_skip": sd2 * abar.sqrt() / r.square(),  # c_skip / sqrt(abar): x_t -> D's skip part
                "edm_out": (1.0 - abar).sqrt() * self.sigma_data / r,  # c_out
                # ln sigma_t = -ln(snr) / 2, increasing in t: the lognormal draw's lookup table
                "log_sigma": -0.5 * snr.log(),
            }
            self._device_tables[key] = {k: v.to(torch.float32).to(device) for k, v in f64.items()}
        return self._device_tables[key]

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = self._tables(like.device)[name][t.to(like.device)]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in closed form for integer timesteps ``t`` [B]."""
        return self._coef("sqrt_abar", t, x0) * x0 + self._coef("sqrt_one_minus_abar", t, x0) * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._coef("sqrt_abar", t, x0) * noise - self._coef("sqrt_one_minus_abar", t, x0) * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at (x_t, t)."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "edm":  # F* = (x0 - c_skip x_t/a) / c_out
            x_t = self.q_sample(x0, t, noise)
            return (x0 - self._coef("edm_skip", t, x0) * x_t) / self._coef("edm_out", t, x0)
        return self.v_target(x0, noise, t)

    def model_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network sees at (x_t, t): x_t itself, or EDM's ``c_in x_t / a`` for ``edm``.

        Every caller of the network goes through here (the loss and :func:`run_sampler`).
        """
        if self.prediction != "edm":
            return x_t
        return x_t * self._coef("edm_in", t.long(), x_t).to(x_t.dtype)

    def split_prediction(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn the network output at (x_t, t) into (predicted x_0, predicted eps)."""
        out = model_output.float()
        a = self._coef("sqrt_abar", t, x_t)
        s = self._coef("sqrt_one_minus_abar", t, x_t)
        if self.prediction == "eps":
            return (x_t - s * out) / a, out
        if self.prediction == "edm":
            x0 = self._coef("edm_skip", t, x_t) * x_t + self._coef("edm_out", t, x_t) * out
            return x0, (x_t - a * x0) / s
        return a * x_t - s * out, s * x_t + a * out

    def loss_weight(self, t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        device = device if device is not None else t.device
        return self._tables(device)["weight"][t.to(device)]

    def sample_training_inputs(
        self, x0: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps (see :meth:`draw_timesteps`) and unit Gaussian noise for a batch, from ``generator``."""
        t, noise = self.draw_training_inputs(tuple(x0.shape), generator, x0.device)
        return t.to(x0.device), noise.to(x0.device)

    def draw_training_inputs(
        self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B] then noise ``shape`` (float32), on the generator's device.

        Training draws these for the whole global batch at once, and every rank of a torchrun run the
        same, then keeps its slice: position i of a global batch gets the same draws for any rank count.
        """
        where = generator.device if generator is not None else device
        t = self.draw_timesteps(shape[0], generator, where)
        noise = torch.randn(shape, device=where, dtype=torch.float32, generator=generator)
        return t, noise

    def draw_timesteps(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """``n`` training timesteps on ``device``: uniform over 0..T-1, or EDM's lognormal noise levels.

        lognormal: ``ln sigma = P_mean + P_std z`` (z standard normal), rounded to the timestep whose
        ``ln sigma_t`` is nearest; draws beyond the schedule's ends land on its first or last step.
        """
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.num_timesteps, (n,), device=device, generator=generator)
        z = torch.randn(n, device=device, dtype=torch.float32, generator=generator)
        log_sigma = LOGNORMAL_P_MEAN + LOGNORMAL_P_STD * z
        table = self._tables(torch.device(device))["log_sigma"]
        upper = torch.searchsorted(table, log_sigma).clamp(1, self.num_timesteps - 1)
        lower = upper - 1
        # the nearer of the two neighbours in ln sigma (ties to the lower step)
        take_upper = (table[upper] - log_sigma) < (log_sigma - table[lower])
        return torch.where(take_upper, upper, lower)

    def loss(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Min-SNR-weighted mean squared error of the prediction target, averaged over the batch.

        ``labels``: class labels for a class-conditional model (``model(x_t, t, labels)``).
        ``inputs``: (timesteps, noise) drawn beforehand (see :meth:`draw_training_inputs`); otherwise
        they are drawn here from ``generator``.
        """
        x0 = x0.float()
        if inputs is None:
            t, noise = self.sample_training_inputs(x0, generator)
        else:
            t, noise = inputs[0].to(x0.device), inputs[1].to(x0.device)
        x_t = self.q_sample(x0, t, noise)
        timesteps = t.to(torch.float32)
        x_in = self.model_input(x_t, t)
        output = model(x_in, timesteps) if labels is None else model(x_in, timesteps, labels)
        per_sample = (output.float() - self.target(x0, noise, t)).square().mean(dim=tuple(range(1, x0.ndim)))
        return (self.loss_weight(t, x0.device) * per_sample).mean()
