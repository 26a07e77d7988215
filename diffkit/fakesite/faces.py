"""Procedural fake faces: test images that look like a (very) simplified, FFHQ-aligned face data set.

Every face is drawn from an explicit ``numpy.random.Generator``: same generator state, same pixels.
Faces are centred and eye-aligned like FFHQ (eyes near 38 % / 62 % across, 47 % down) so that a small
DDPM can learn the distribution, and they vary in background, skin, hair style and colour, eye colour,
brows, nose, mouth and accessories so that near-duplicate detection has distinct images to tell apart.

Speed: shapes are drawn with Pillow at 2x the output size (at most a 1024 px canvas), box-reduced
(antialiasing) and, above 512 px, upscaled. A film-grain layer cropped from a fixed noise tile gives
JPEGs realistic entropy (a flat cartoon would compress to a few KB, unlike real photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

__all__ = ["HAIR_STYLES", "draw_face", "write_face_folder"]

HAIR_STYLES = ("bald", "short", "long", "bun", "fringe", "curly", "mohawk")

# Drawn detail is capped at this resolution; larger outputs are upscaled (keeps 1024 px fast).
_MAX_DETAIL = 512
_SUPERSAMPLE = 2

_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 94], [161, 102, 68], [110, 70, 45]],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [[20, 16, 14], [60, 40, 25], [110, 70, 35], [170, 120, 60], [220, 190, 120], [150, 60, 30],
     [130, 130, 130], [235, 235, 230]],
    dtype=np.float64,
)
_IRIS_COLOURS = np.array(
    [[70, 45, 25], [110, 75, 40], [60, 110, 60], [60, 100, 160], [120, 140, 170], [40, 30, 25]],
    dtype=np.float64,
)

RGB = tuple[int, int, int]


def _rgb(values: Sequence[float] | np.ndarray) -> RGB:
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0, 255)
    return int(clipped[0]), int(clipped[1]), int(clipped[2])


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    return colour + rng.normal(0.0, amount, size=3)


def _scale(colour: np.ndarray, factor: float) -> np.ndarray:
    return colour * factor


def _background(rng: np.random.Generator, canvas: int) -> Image.Image:
    """A random gradient plus 1-3 soft colour blobs, computed at 16 px and upscaled (cheap, smooth).

    The blobs stand in for FFHQ's cluttered backgrounds: they vary the low frequencies that
    perceptual hashes look at, so distinct faces do not look like near-duplicates to pHash.
    """
    c0 = rng.uniform(20, 235, size=3)
    c1 = np.clip(c0 + rng.normal(0, 60, size=3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    grid = np.linspace(-1.0, 1.0, 16)
    xs, ys = np.meshgrid(grid, grid)
    t = np.clip(0.5 + 0.5 * (np.cos(angle) * xs + np.sin(angle) * ys), 0, 1)[..., None]
    pixels = c0 * (1 - t) + c1 * t
    for _ in range(int(rng.integers(1, 4))):
        bx, by = rng.uniform(-1, 1, size=2)
        radius = rng.uniform(0.2, 0.6)
        weight = np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * radius**2))[..., None]
        pixels = pixels * (1 - weight) + rng.uniform(0, 255, size=3) * weight
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    # Bilinear to a quarter, then nearest: smooth enough after the supersampling reduce, 5x cheaper.
    quarter = max(16, canvas // 4)
    return small.resize((quarter, quarter), Image.Resampling.BILINEAR).resize(
        (canvas, canvas), Image.Resampling.NEAREST)


class _Pen:
    """Draws in unit coordinates (0..1 across the canvas) so every size shares one face geometry."""

    def __init__(self, image: Image.Image) -> None:
        self.draw = ImageDraw.Draw(image)
        self.s = image.width

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        s = self.s
        return [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        self.draw.ellipse(self.box(cx, cy, rx, ry), fill=fill)

    def chord(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: RGB) -> None:
        self.draw.chord(self.box(cx, cy, rx, ry), start, end, fill=fill)

    def arc(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float, fill: RGB,
            width: float) -> None:
        self.draw.arc(self.box(cx, cy, rx, ry), start, end, fill=fill, width=max(1, round(width * self.s)))

    def polygon(self, points: Sequence[tuple[float, float]], fill: RGB) -> None:
        self.draw.polygon([(x * self.s, y * self.s) for x, y in points], fill=fill)

    def line(self, points: Sequence[tuple[float, float]], fill: RGB, width: float) -> None:
        self.draw.line([(x * self.s, y * self.s) for x, y in points], fill=fill,
                       width=max(1, round(width * self.s)), joint="curve")

    def rectangle(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        s = self.s
        self.draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], fill=fill)


def _draw_hair_back(pen: _Pen, rng: np.random.Generator, style: str, hair: RGB, cx: float, cy: float,
                    rx: float, ry: float) -> None:
    """Hair volume behind the head (drawn before the face oval, so the face covers its middle)."""
    if style in ("bald", "mohawk"):
        return
    volume = rng.uniform(1.06, 1.16)
    pen.ellipse(cx, cy - ry * 0.1, rx * volume, ry * (volume - 0.06), hair)
    if style == "long":
        length = rng.uniform(0.25, 0.45)
        pen.rectangle(cx - rx * volume, cy - ry * 0.1, cx + rx * volume, min(1.0, cy + length), hair)
    elif style == "bun":
        pen.ellipse(cx, cy - ry * 1.1, rx * 0.42, rx * 0.38, hair)
    elif style == "curly":
        for k in range(11):
            angle = np.pi * (1.0 + k / 10.0)
            pen.ellipse(cx + rx * 1.05 * np.cos(angle), cy - ry * 0.1 + ry * 0.95 * np.sin(angle),
                        rx * 0.26, rx * 0.26, hair)


def _draw_hair_front(pen: _Pen, rng: np.random.Generator, style: str, hair: RGB, cx: float, cy: float,
                     rx: float, ry: float) -> None:
    """The hairline over the top of the face oval; its lower edge stays above the brows."""
    if style == "bald":
        return
    if style == "mohawk":
        pen.chord(cx, cy - ry * 0.62, rx * 0.2, ry * 0.62, 180, 360, hair)
        return
    hairline = ry * rng.uniform(0.55, 0.68)  # distance of the hairline above the face centre
    pen.chord(cx, cy - hairline, rx * 1.01, ry - hairline + ry * 0.02, 180, 360, hair)
    if style == "fringe":
        pen.chord(cx, cy - hairline, rx * 0.92, ry * rng.uniform(0.1, 0.18), 0, 180, hair)
    elif style in ("short", "curly", "long"):
        parting = rng.uniform(-0.5, 0.5) * rx  # a side-swept lock
        pen.chord(cx + parting, cy - hairline, rx * 0.6, ry * rng.uniform(0.05, 0.12), 0, 180, hair)


def _draw_eye(pen: _Pen, rng_values: dict[str, float], x: float, y: float, iris: RGB, skin_dark: RGB,
              brow: RGB, side: int) -> None:
    rx, ry = rng_values["eye_rx"], rng_values["eye_ry"]
    pen.ellipse(x, y, rx * 1.15, ry * 1.4, skin_dark)  # socket shadow
    pen.ellipse(x, y, rx, ry, (245, 242, 236))
    ir = ry * 0.95
    gaze = rng_values["gaze"] * rx * 0.35
    pen.ellipse(x + gaze, y, ir, ir, iris)
    pen.ellipse(x + gaze, y, ir * 0.45, ir * 0.45, (12, 10, 10))
    pen.ellipse(x + gaze + ir * 0.3, y - ir * 0.35, ir * 0.18, ir * 0.18, (250, 250, 250))
    # Brow: a thick polyline, tilted by the face's expression.
    by = y - rng_values["brow_gap"]
    tilt = rng_values["brow_tilt"] * side
    pen.line([(x - side * rx * 1.2, by + tilt), (x, by - ry * 0.4), (x + side * rx * 1.2, by - tilt)],
             brow, rng_values["brow_width"])


def draw_face(rng: np.random.Generator, size: int = 1024) -> Image.Image:
    """Draw one procedural RGB face of ``size`` x ``size`` pixels from ``rng``.

    The draws taken from ``rng`` do not depend on ``size``: the same generator state gives the same
    face at every size (differing only by resampling).
    """
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    detail = min(size, _MAX_DETAIL)
    canvas = detail * _SUPERSAMPLE
    image = _background(rng, canvas)
    pen = _Pen(image)

    skin_base = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
    skin = _jitter(rng, skin_base, 8)
    hair = _jitter(rng, _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], 10)
    iris = _jitter(rng, _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 12)
    clothes = rng.uniform(20, 235, size=3)
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]

    # Geometry in unit coordinates, FFHQ-like: face centred slightly below the middle.
    cx = 0.5 + rng.normal(0, 0.015)
    cy = 0.53 + rng.normal(0, 0.012)
    rx = rng.uniform(0.18, 0.26)
    ry = rng.uniform(0.25, 0.33)
    eye_y = cy - ry * rng.uniform(0.18, 0.26)
    eye_dx = rx * rng.uniform(0.42, 0.5)
    values = {
        "eye_rx": rx * rng.uniform(0.17, 0.23),
        "eye_ry": rx * rng.uniform(0.08, 0.12),
        "gaze": rng.uniform(-1, 1),
        "brow_gap": rx * rng.uniform(0.22, 0.32),
        "brow_tilt": rx * rng.uniform(-0.06, 0.08),
        "brow_width": rx * rng.uniform(0.04, 0.09),
    }
    mouth_y = cy + ry * rng.uniform(0.45, 0.58)
    mouth_w = rx * rng.uniform(0.3, 0.48)
    smile = rng.uniform(-0.3, 1.0)
    nose_len = ry * rng.uniform(0.28, 0.4)
    glasses = rng.random() < 0.15
    beard = rng.random() < 0.12
    grain = rng.uniform(4.0, 9.0)
    grain_offset = (int(rng.integers(256)), int(rng.integers(256)))

    skin_rgb, skin_dark = _rgb(skin), _rgb(_scale(skin, 0.82))
    hair_rgb = _rgb(hair)

    # Back to front: shoulders, neck, back hair, ears, face, front hair, features.
    pen.ellipse(cx, 1.08, 0.42, 0.22, _rgb(clothes))
    pen.rectangle(cx - rx * 0.45, cy + ry * 0.5, cx + rx * 0.45, 0.92, _rgb(_scale(skin, 0.88)))
    _draw_hair_back(pen, rng, style, hair_rgb, cx, cy, rx, ry)
    pen.ellipse(cx - rx, cy - ry * 0.05, rx * 0.14, ry * 0.16, skin_dark)
    pen.ellipse(cx + rx, cy - ry * 0.05, rx * 0.14, ry * 0.16, skin_dark)
    pen.ellipse(cx, cy, rx, ry, skin_rgb)
    pen.ellipse(cx - rx * 0.5, cy + ry * 0.25, rx * 0.2, ry * 0.1, _rgb(skin * [1.02, 0.9, 0.9]))  # cheeks
    pen.ellipse(cx + rx * 0.5, cy + ry * 0.25, rx * 0.2, ry * 0.1, _rgb(skin * [1.02, 0.9, 0.9]))
    if beard:
        pen.chord(cx, cy + ry * 0.3, rx * 0.95, ry * 0.7, 0, 180, _rgb(_scale(hair, 0.9)))
    _draw_hair_front(pen, rng, style, hair_rgb, cx, cy, rx, ry)
    brow = _rgb(_scale(hair, 0.8))
    _draw_eye(pen, values, cx - eye_dx, eye_y, _rgb(iris), skin_dark, brow, side=-1)
    _draw_eye(pen, values, cx + eye_dx, eye_y, _rgb(iris), skin_dark, brow, side=1)
    nose_bottom = eye_y + nose_len
    pen.line([(cx, eye_y + ry * 0.05), (cx + rx * 0.05, nose_bottom), (cx - rx * 0.06, nose_bottom)],
             _rgb(_scale(skin, 0.72)), rx * 0.035)
    pen.ellipse(cx - rx * 0.08, nose_bottom, rx * 0.04, rx * 0.025, _rgb(_scale(skin, 0.6)))
    pen.ellipse(cx + rx * 0.08, nose_bottom, rx * 0.04, rx * 0.025, _rgb(_scale(skin, 0.6)))
    lip = _rgb(skin * [0.85, 0.55, 0.55])
    if smile > 0:  # smiling: a lower half-chord, teeth showing for big smiles
        pen.chord(cx, mouth_y - ry * 0.04, mouth_w, ry * 0.03 + ry * 0.09 * smile, 0, 180, lip)
        if smile > 0.6:
            pen.chord(cx, mouth_y - ry * 0.04, mouth_w * 0.8, ry * 0.06 * smile, 0, 180, (240, 238, 230))
    else:
        pen.arc(cx, mouth_y + ry * 0.05, mouth_w, ry * 0.08, 200, 340, lip, rx * 0.05)
    if glasses:
        frame, lens = (25, 25, 30), values["eye_rx"] * 1.6
        for side in (-1, 1):
            pen.arc(cx + side * eye_dx, eye_y, lens, lens * 0.78, 0, 360, frame, rx * 0.03)
        pen.line([(cx - eye_dx + lens, eye_y), (cx + eye_dx - lens, eye_y)], frame, rx * 0.03)

    image = image.reduce(_SUPERSAMPLE)
    if size != detail:
        # NEAREST, not BICUBIC: 10x cheaper at 1024 px, and the full-resolution grain added next
        # hides the 2x2 pixel blocks.
        image = image.resize((size, size), Image.Resampling.NEAREST)
    return _add_grain(image, grain * min(1.0, size / _MAX_DETAIL) ** 0.5, grain_offset)


_GRAIN_SIGMA = 8.0
_GRAIN_TILE_SIDE = 1024 + 256
_grain_tile: Image.Image | None = None


def _grain_source() -> Image.Image:
    """A fixed gaussian-noise tile (seeded, built once): faces crop it at random offsets.

    Drawing fresh noise per face costs more than all the shapes together at 1024 px.
    """
    global _grain_tile
    if _grain_tile is None:
        side = _GRAIN_TILE_SIDE
        noise = np.random.default_rng(20240101).normal(128.0, _GRAIN_SIGMA, size=(side, side))
        _grain_tile = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "L")
    return _grain_tile


def _add_grain(image: Image.Image, sigma: float, offset: tuple[int, int]) -> Image.Image:
    """Monochrome sensor-like grain; gives JPEGs a photo-like size instead of a cartoon's few KB."""
    side = min(image.width, _GRAIN_TILE_SIDE - 256)
    ox, oy = offset
    grain = _grain_source().crop((ox, oy, ox + side, oy + side))
    if side != image.width:
        grain = grain.resize(image.size, Image.Resampling.NEAREST)
    gain = sigma / _GRAIN_SIGMA
    grain = grain.point([int(round(128 + (v - 128) * gain)) for v in range(256)])
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), 1.0, -128)


def write_face_folder(directory: Path | str, n: int, size: int = 64, seed: int = 0,
                      fmt: str = "png") -> list[Path]:
    """Write ``n`` faces as ``face-00000.<fmt>``... into ``directory``; returns the paths in order.

    Face ``i`` depends only on ``(seed, i)``, so a larger ``n`` extends a folder without changing the
    files already there. ``fmt`` is ``png`` (lossless, default) or ``jpg``/``jpeg`` (quality 95).
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in ("png", "jpg", "jpeg"):
        raise ValueError(f"fmt must be png, jpg or jpeg, got {fmt!r}")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index in range(n):
        face = draw_face(np.random.default_rng([seed, index]), size)
        path = out_dir / f"face-{index:05d}.{fmt}"
        if fmt == "png":
            face.save(path, format="PNG")
        else:
            face.save(path, format="JPEG", quality=95)
        paths.append(path)
    return paths
