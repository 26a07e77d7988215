"""Denoising animations: per step, x_t beside the predicted x_0, for the first few images.

The format follows the file name: ``.gif``, ``.webp`` (animated, lossless) or ``.png`` / ``.apng``
(APNG). All three play in Chromium, Firefox and Safari. The report embeds WebP: on real denoising
frames it came out smallest by far (benchmarks/bench_sample.py encodes one trajectory in all three;
see reports/bench_sample.json) while keeping every colour, where GIF's 256-colour palette bands the
predicted x_0. GIF remains the choice for pasting into places that play nothing else.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from diffkit.atomic import atomic_write_bytes
from diffkit.errors import DiffkitError
from diffkit.sample.config import ANIMATION_SUFFIXES
from diffkit.sample.generate import Trajectory

FORMATS = dict(zip(ANIMATION_SUFFIXES, ("GIF", "WEBP", "PNG", "PNG"), strict=True))
MAX_FRAMES = 24  # denoising steps shown (evenly spaced, the last always): noise frames barely compress
FRAME_MS = 120
HOLD_MS = 1500  # the finished images stay this long before the loop restarts
MIN_TILE = 64  # small images are enlarged (nearest neighbour) to at least this many pixels
GAP = 4
HEADER = 14


def _frame_indices(count: int) -> list[int]:
    if count <= MAX_FRAMES:
        return list(range(count))
    return sorted(set(np.linspace(0, count - 1, MAX_FRAMES).round().astype(int).tolist()))


def _frame(x_t: np.ndarray, x0: np.ndarray, caption: str, scale: int) -> Image.Image:
    """One frame: a row per image, x_t on the left and the predicted x_0 on the right."""
    count, height, width = x_t.shape[:3]
    tile_h, tile_w = height * scale, width * scale
    canvas = Image.new("RGB", (3 * GAP + 2 * tile_w, HEADER + GAP + count * (tile_h + GAP)), (16, 16, 16))
    for row in range(count):
        y = HEADER + GAP + row * (tile_h + GAP)
        for column, pixels in enumerate((x_t[row], x0[row])):
            tile = Image.fromarray(pixels).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (GAP + column * (tile_w + GAP), y))
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 2), caption, fill=(235, 235, 235))
    return canvas


def animation_frames(trajectory: Trajectory) -> tuple[list[Image.Image], list[int]]:
    """The frames and their durations (ms): the chosen steps, then the finished images, held."""
    if not trajectory.x_t or trajectory.final is None:
        raise DiffkitError("no denoising steps were recorded for the animation")
    height = trajectory.x_t[0].shape[1]
    scale = max(1, -(-MIN_TILE // height))
    frames, durations = [], []
    total = len(trajectory.timesteps)
    for index in _frame_indices(total):
        t = trajectory.timesteps[index]
        caption = f"step {index + 1}/{total}  t={t}  x_t | x0"
        frames.append(_frame(trajectory.x_t[index], trajectory.x0[index], caption, scale))
        durations.append(FRAME_MS)
    final = trajectory.final
    frames.append(_frame(final, final, f"done ({total} steps)", scale))
    durations.append(HOLD_MS)
    return frames, durations


def encode_animation(trajectory: Trajectory, suffix: str = ".gif") -> tuple[bytes, str]:
    """The animation's bytes in the format of ``suffix``, and its MIME type."""
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        raise DiffkitError(f"--gif must end in {', '.join(FORMATS)} (got {suffix or 'no suffix'!r})")
    frames, durations = animation_frames(trajectory)
    options: dict[str, object] = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": durations,
        "loop": 0,
    }
    if fmt == "WEBP":
        options |= {"lossless": True, "method": 4}
    elif fmt == "GIF":
        frames = [frame.quantize(256, dither=Image.Dither.NONE) for frame in frames]
        options |= {"append_images": frames[1:], "optimize": False, "disposal": 1}
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, **options)
    mime = {"GIF": "image/gif", "WEBP": "image/webp", "PNG": "image/apng"}[fmt]
    return buffer.getvalue(), mime


def write_animation(trajectory: Trajectory, path: Path) -> Path:
    data, _ = encode_animation(trajectory, path.suffix)
    try:
        atomic_write_bytes(path, data, durable=False)
    except OSError as exc:
        raise DiffkitError(f"cannot write the animation {path} ({exc.strerror})") from None
    return path
