"""lucidrains' ``denoising-diffusion-pytorch`` (PyPI), the compact DDPM hobbyists pick, as its Trainer runs.

Its three objects are used as they ship: ``Unet``, ``GaussianDiffusion`` (its defaults: 1000 steps,
sigmoid beta schedule, v-prediction, no min-SNR weighting) and ``ema_pytorch.EMA`` with the Trainer's
arguments. The Trainer's loop itself is reproduced (``DdpmTrainer.step``) because the class also wants a
folder of at least 100 images, a ``DataLoader`` with a worker per core, ``accelerate`` and an FID run every
1000 steps, none of which a one-thread timed job can carry; what one iteration does is the same. The
Trainer's defaults, read from ``Trainer.__init__`` (version 2.x):

- ``train_batch_size 16``, ``train_lr 1e-4``, ``adam_betas (0.9, 0.99)`` (plain ``Adam``, constant lr:
  no warm-up, no decay), ``max_grad_norm 1.0``, ``augment_horizontal_flip True``;
- ``ema_decay 0.995``, ``ema_update_every 10`` (EMA's own ``update_after_step 100`` and warm-up);
- ``amp False`` (fp32); images arrive in [0, 1] (``ToTensor``) and ``GaussianDiffusion`` maps them to
  [-1, 1] (``auto_normalize``).

Matched size: ``Unet(dim=42, dim_mults=(1, 2, 2, 2))`` has 3.31M parameters, within 2% of diffkit's tiny
preset (3.34M; tests/test_bench_peers.py asserts it); four levels like tiny's, so its innermost
resolution is 4 px at 32 px. Its main knobs for a tuning sweep (``SWEEP``): lr, batch and the EMA decay
(it has no LR schedule to warm up).

Samples: its own DDIM update (``GaussianDiffusion.ddim_sample``, eta 0, 50 steps through
``sampling_timesteps``) from given noise, so every contender starts from the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA

from diffkit.diffusion.pixels import to_uint8

RESOLUTION = 32
DIM, DIM_MULTS = 42, (1, 2, 2, 2)


@dataclass(frozen=True)
class DdpmSetting:
    """The Trainer's knobs a sweep turns; the defaults are its own."""

    batch_size: int = 16
    lr: float = 1e-4
    ema_decay: float = 0.995

    @property
    def name(self) -> str:
        return f"b{self.batch_size}_lr{self.lr:g}_ema{self.ema_decay:g}"


SHIPPED = DdpmSetting()
ADAM_BETAS = (0.9, 0.99)
MAX_GRAD_NORM = 1.0
EMA_UPDATE_EVERY = 10
# lr x batch x EMA decay: 3 x 2 x 2 = 12 settings besides the defaults, the size of the recipe's sweep
# and of diffkit's lever runs
SWEEP = tuple(
    DdpmSetting(batch, lr, decay)
    for batch in (16, 32)
    for lr in (1e-4, 3e-4, 1e-3)
    for decay in (0.999, 0.99)  # either side of the default 0.995, so the grid does not repeat it
)


def build_diffusion(sample_steps: int) -> GaussianDiffusion:
    """The matched ``Unet`` inside ``GaussianDiffusion`` at its defaults (DDIM with ``sample_steps``)."""
    unet = Unet(dim=DIM, dim_mults=DIM_MULTS)
    return GaussianDiffusion(unet, image_size=RESOLUTION, sampling_timesteps=sample_steps)


class DdpmTrainer:
    """One run of the Trainer's loop: ``step()`` is one iteration of ``Trainer.train``."""

    def __init__(self, images: np.ndarray, seed: int, setting: DdpmSetting = SHIPPED, sample_steps: int = 50):
        torch.manual_seed(seed)  # the network's initialisation and, below, every draw of the loss
        self.setting = setting
        self.diffusion = build_diffusion(sample_steps)
        self.optimizer = torch.optim.Adam(self.diffusion.parameters(), lr=setting.lr, betas=ADAM_BETAS)
        self.ema = EMA(self.diffusion, beta=setting.ema_decay, update_every=EMA_UPDATE_EVERY)
        # the library draws its timesteps and noise from torch's global generator: seeded above
        self.generator = torch.Generator().manual_seed(seed)
        self.data = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0
        self.steps = 0

    def next_batch(self) -> torch.Tensor:
        """``DataLoader(shuffle=True)`` cycled, ``ToTensor`` ([0, 1]) and a random horizontal flip."""
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.position = 0
        index = self.order[self.position : self.position + self.setting.batch_size]
        self.position += len(index)
        batch = self.data[index].float() / 255.0
        flip = torch.rand(len(batch), generator=self.generator) < 0.5
        return torch.where(flip[:, None, None, None], batch.flip(-1), batch)

    def step(self) -> float:
        self.diffusion.train()
        loss = self.diffusion(self.next_batch())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.diffusion.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.ema.update()
        self.steps += 1
        return float(loss.detach())

    def ema_diffusion(self) -> GaussianDiffusion:
        return self.ema.ema_model.eval()


@torch.no_grad()
def ddim_sample(
    diffusion: GaussianDiffusion, noise: torch.Tensor, batch_size: int = 64
) -> tuple[np.ndarray, torch.Tensor]:
    """``GaussianDiffusion.ddim_sample`` (eta 0) from given noise instead of its own ``randn``: (NHWC uint8
    as every contender converts, the library's own output in [0, 1])."""
    total, steps = diffusion.num_timesteps, diffusion.sampling_timesteps
    times = list(reversed(torch.linspace(-1, total - 1, steps=steps + 1).int().tolist()))
    out = []
    for chunk in noise.split(batch_size):
        img = chunk.clone()
        for time, time_next in zip(times[:-1], times[1:], strict=True):
            t = torch.full((len(img),), time, dtype=torch.long)
            pred_noise, x_start, *_ = diffusion.model_predictions(
                img, t, None, clip_x_start=True, rederive_pred_noise=True
            )
            if time_next < 0:
                img = x_start
                continue
            alpha_next = diffusion.alphas_cumprod[time_next]
            img = x_start * alpha_next.sqrt() + (1 - alpha_next).sqrt() * pred_noise  # eta 0: no noise term
        out.append(img)
    final = torch.cat(out)  # in [-1, 1]: the last step is the clipped x_start
    return to_uint8(final), diffusion.unnormalize(final)


def forward_flops(diffusion: GaussianDiffusion) -> int:
    """FLOPs of one U-Net forward on one 32 px image (torch's counter, as for the diffusers twin)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        diffusion.model(torch.zeros(1, 3, RESOLUTION, RESOLUTION), torch.zeros(1))
    return int(counter.get_total_flops())
