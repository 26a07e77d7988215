"""Image grids: contact sheets of uint8 images, and the training progression image.

Used by training (the fixed-noise grids) and ``diffkit sample --grid``; it needs numpy and PIL only, so
any command may use it without reaching into another command's package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PADDING = 2


def grid_columns(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = PADDING) -> Image.Image:
    """Lay NHWC uint8 images out row by row on a black canvas with ``padding`` pixels between them."""
    n, height, width = images.shape[:3]
    columns = columns or grid_columns(n)
    rows = math.ceil(n / columns)
    canvas = np.zeros(
        (padding + rows * (height + padding), padding + columns * (width + padding), 3), np.uint8
    )
    for index in range(n):
        row, col = divmod(index, columns)
        y, x = padding + row * (height + padding), padding + col * (width + padding)
        canvas[y : y + height, x : x + width] = images[index]
    return Image.fromarray(canvas)


def progression_image(
    grids: Sequence[tuple[int, Path]], resolution: int, max_rows: int = 32, padding: int = PADDING
) -> Image.Image | None:
    """Stack the first row of each fixed-noise grid over training time, labelled with its kimg.

    ``grids`` are (nimg, path) pairs, oldest first; long runs are thinned evenly to ``max_rows`` rows
    (first and last always kept).
    """
    if not grids:
        return None
    if len(grids) > max_rows:
        picks = np.unique(np.linspace(0, len(grids) - 1, max_rows).round().astype(int))
        grids = [grids[i] for i in picks]
    strip_height = resolution + padding
    label_width = 64
    strips = []
    for nimg, path in grids:
        with Image.open(path) as grid:
            strip = grid.convert("RGB").crop((0, 0, grid.width, strip_height + padding))
        strips.append((nimg, strip))
    width = label_width + max(s.width for _, s in strips)
    canvas = Image.new("RGB", (width, padding + len(strips) * strip_height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, (nimg, strip) in enumerate(strips):
        y = row * strip_height
        canvas.paste(strip, (label_width, y))
        draw.text((4, y + padding + max(resolution // 2 - 6, 0)), f"{nimg / 1000:.1f}k", fill=(230, 230, 230))
    return canvas
