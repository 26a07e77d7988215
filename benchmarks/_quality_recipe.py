"""diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` at its defaults, minus I/O.

The training step, optimiser, LR schedule, EMA and noise schedule are the script's, built from the same
diffusers objects (``UNet2DModel``, ``DDPMScheduler``, ``get_scheduler``, ``EMAModel``); only what
cannot run here is replaced: ``accelerate`` (one CPU process; its ``mixed_precision="bf16"`` is an
autocast around the forward, reproduced as such) and ``datasets`` + torchvision transforms (the images
arrive as the same uint8 array diffkit trains on; ``ToTensor`` + ``Normalize(0.5, 0.5)`` is
``x / 127.5 - 1``). Defaults, from the script's argparse and its README command:

- ``--train_batch_size 16``, ``--learning_rate 1e-4``, ``--lr_scheduler cosine``, ``--lr_warmup_steps 500``
- ``--adam_beta1 0.95 --adam_beta2 0.999 --adam_weight_decay 1e-6 --adam_epsilon 1e-8``
- ``--use_ema`` with ``--ema_max_decay 0.9999 --ema_inv_gamma 1.0 --ema_power 0.75`` (EMA warm-up on)
- ``--ddpm_num_steps 1000 --ddpm_beta_schedule linear`` (betas 1e-4 .. 0.02), ``--prediction_type epsilon``
- gradient clipping at norm 1.0, ``--random_flip`` (the README's command passes it), fp32 unless
  ``--mixed_precision bf16``.

The script's network is far larger; here ``UNet2DModel`` gets diffkit's tiny-preset shape
(``benchmarks.twins.diffusers_twin``) so parameters and FLOPs match. The run length: the script plans its
cosine schedule for ``len(dataloader) * num_epochs`` steps; here for the step count that its pilot steps
predict for the CPU-seconds budget, so the schedule ends when the budget does, as a user who sized
``--num_epochs`` to it would get; the job then stops on the clock (``_quality_job.CpuClock``).

The knobs a tuning sweep turns (``RecipeSetting``: batch, peak lr, warm-up) are the script's own
``--train_batch_size``, ``--learning_rate`` and ``--lr_warmup_steps``. Its 500 warm-up steps were set for
runs of tens of thousands of steps; for a budget of a few hundred steps the setting follows the common
practice of a warm-up that is a fraction of the run (transformers' ``warmup_ratio``): ``SCALED``, 10% of
the planned steps, at most the script's 500. ``SWEEP`` is the grid the peer-tuning run trains.

Samples come from the EMA weights through ``DDIMScheduler.from_config`` of the training scheduler, the
loop of ``DDIMPipeline.__call__`` (eta 0) on given noise, so every contender starts from the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from benchmarks.twins import diffusers_twin
from diffkit.diffusion.pixels import to_uint8
from diffkit.models.config import UNetConfig


@dataclass(frozen=True)
class RecipeDefaults:
    batch_size: int = 16
    lr: float = 1e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 500
    adam_betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 1e-6
    adam_eps: float = 1e-8
    ema_max_decay: float = 0.9999
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    grad_clip: float = 1.0
    random_flip: bool = True


DEFAULTS = RecipeDefaults()
SCALED_WARMUP_FRACTION = 0.1


@dataclass(frozen=True)
class RecipeSetting:
    """What a sweep changes: batch, peak lr, and the warm-up as a fraction of the planned steps (``None``:
    the script's fixed ``--lr_warmup_steps 500``)."""

    batch_size: int = DEFAULTS.batch_size
    lr: float = DEFAULTS.lr
    warmup_fraction: float | None = None

    def warmup_steps(self, total_steps: int) -> int:
        if self.warmup_fraction is None:
            return DEFAULTS.warmup_steps
        # never longer than the script's own warm-up: it was sized for far longer runs
        return min(DEFAULTS.warmup_steps, round(self.warmup_fraction * total_steps))

    @property
    def name(self) -> str:
        warmup = "500steps" if self.warmup_fraction is None else f"{self.warmup_fraction:g}"
        return f"b{self.batch_size}_lr{self.lr:g}_wu{warmup}"


SHIPPED = RecipeSetting()  # the script's defaults, warm-up 500 steps whatever the budget
SCALED = RecipeSetting(warmup_fraction=SCALED_WARMUP_FRACTION)  # the defaults with a budget-sized warm-up
# lr x warm-up x batch: 3 x 2 x 2 = 12 settings, as many as diffkit's lever runs trained (bench_quality
# counts them from the committed lever reports: peer_sweep_size)
SWEEP = tuple(
    RecipeSetting(batch, lr, warmup)
    for batch in (16, 32)
    for lr in (1e-4, 3e-4, 1e-3)
    for warmup in (0.02, SCALED_WARMUP_FRACTION)
)


class RecipeTrainer:
    """One run of the recipe: ``step()`` is one iteration of the script's inner loop."""

    def __init__(
        self, images: np.ndarray, config: UNetConfig, total_steps: int, seed: int, bf16: bool,
        setting: RecipeSetting = SHIPPED,
    ) -> None:  # fmt: skip
        d = DEFAULTS
        self.setting = setting
        torch.manual_seed(seed)  # the network's initialisation
        self.model = diffusers_twin(config).train()
        self.noise_scheduler = DDPMScheduler(
            num_train_timesteps=d.train_timesteps,
            beta_schedule=d.beta_schedule,
            prediction_type=d.prediction_type,
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=setting.lr, betas=d.adam_betas, weight_decay=d.weight_decay,
            eps=d.adam_eps,
        )  # fmt: skip
        self.lr_scheduler = get_scheduler(
            d.lr_scheduler, optimizer=self.optimizer, num_warmup_steps=setting.warmup_steps(total_steps),
            num_training_steps=total_steps,
        )  # fmt: skip
        self.ema = EMAModel(
            self.model.parameters(), decay=d.ema_max_decay, use_ema_warmup=True, inv_gamma=d.ema_inv_gamma,
            power=d.ema_power, model_cls=UNet2DModel, model_config=self.model.config,
        )  # fmt: skip
        self.bf16 = bf16
        # One generator for data order, flips, noise and timesteps: a seed fixes the whole run.
        self.generator = torch.Generator().manual_seed(seed)
        self.data = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2)  # a copy: the cache is read-only
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0
        self.steps = 0

    def next_batch(self) -> torch.Tensor:
        """``DataLoader(shuffle=True, drop_last=False)``: a new permutation per epoch, short last batch."""
        if self.position >= len(self.order):
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.position = 0
        index = self.order[self.position : self.position + self.setting.batch_size]
        self.position += len(index)
        batch = self.data[index].float() / 127.5 - 1.0
        if DEFAULTS.random_flip:
            flip = torch.rand(len(batch), generator=self.generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        return batch

    def step(self) -> float:
        clean_images = self.next_batch()
        noise = torch.randn(clean_images.shape, generator=self.generator)
        bsz = clean_images.shape[0]
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (bsz,), generator=self.generator
        ).long()
        noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            model_output = self.model(noisy_images, timesteps).sample
        loss = F.mse_loss(model_output.float(), noise.float())  # prediction_type "epsilon"
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), DEFAULTS.grad_clip)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.model.parameters())
        self.steps += 1
        return float(loss.detach())

    def ema_model(self) -> UNet2DModel:
        """The network with the EMA weights copied in (what the script's pipeline samples from)."""
        self.ema.copy_to(self.model.parameters())
        return self.model.eval()


@torch.no_grad()
def ddim_sample(
    unet: UNet2DModel, scheduler_config: dict, noise: torch.Tensor, steps: int, batch_size: int = 64
) -> tuple[np.ndarray, torch.Tensor]:
    """``DDIMPipeline``'s loop (eta 0) from ``noise``: (NHWC uint8, the final float images in [-1, 1])."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps)
    finals = []
    for chunk in noise.split(batch_size):
        image = chunk.clone()
        for t in scheduler.timesteps:
            model_output = unet(image, t).sample
            image = scheduler.step(model_output, t, image, eta=0.0).prev_sample
        finals.append(image)
    final = torch.cat(finals)
    return to_uint8(final), final
