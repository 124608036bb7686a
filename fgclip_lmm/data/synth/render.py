"""Drawing scenes of the synthetic world with numpy + PIL.

Scenes are drawn at twice the output size and box-filtered down (cheap anti-aliasing). Pattern periods are tied
to the image side, not the object, so a pattern looks the same on every object size; at 64 px a stripe is about
two pixels wide and a small object still shows a few of them. Pattern overlays are white on dark colours and
near-black on light ones. Background noise is drawn from an RNG seeded by (seed, index), so every image is a
pure function of its scene and the seed, whichever process draws it.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from fgclip_lmm.data.synth.world import BACKGROUNDS, COLOURS, Scene

SUPERSAMPLE = 2


@lru_cache(maxsize=256)
def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) mask of `shape` filling its square box."""
    image = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(image)
    s = side - 1
    if shape == "circle":
        draw.ellipse((0, 0, s, s), fill=255)
    elif shape == "square":
        m = round(0.06 * s)
        draw.rectangle((m, m, s - m, s - m), fill=255)
    elif shape == "triangle":
        draw.polygon([(s / 2, 0), (s, s), (0, s)], fill=255)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = 0.5 if k % 2 == 0 else 0.21
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((s / 2 + radius * s * math.cos(angle), s * 0.53 + radius * s * 1.05 * math.sin(angle)))
        draw.polygon(points, fill=255)
    elif shape == "hexagon":
        draw.polygon(
            [(s / 2 + s / 2 * math.cos(k * math.pi / 3), s / 2 + s / 2 * math.sin(k * math.pi / 3)) for k in range(6)],
            fill=255,
        )
    elif shape == "cross":
        a, b = round(0.32 * s), round(0.68 * s)
        draw.rectangle((a, 0, b, s), fill=255)
        draw.rectangle((0, a, s, b), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(image) > 127


@lru_cache(maxsize=64)
def pattern_mask(pattern: str, side: int, period: int) -> np.ndarray:
    """Boolean (side, side) mask of the overlay pixels of `pattern` (all False for plain)."""
    y, x = np.mgrid[0:side, 0:side]
    if pattern == "plain":
        return np.zeros((side, side), dtype=bool)
    if pattern == "striped":
        return ((x + y) % period) < period // 2
    if pattern == "dotted":
        spacing = period + period // 2
        dy, dx = (y % spacing) - spacing / 2, (x % spacing) - spacing / 2
        return dx * dx + dy * dy <= (0.28 * spacing) ** 2
    if pattern == "checkered":
        cell = max(2, (3 * period) // 4)
        return ((x // cell) + (y // cell)) % 2 == 0
    raise ValueError(f"unknown pattern {pattern!r}")


def _overlay_colour(rgb: tuple[int, int, int]) -> np.ndarray:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return np.array((25, 25, 25) if luminance > 140 else (250, 250, 250), dtype=np.uint8)


def _background(scene: Scene, side: int, rng: np.random.Generator) -> np.ndarray:
    base = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    canvas = np.broadcast_to(base, (side, side, 3)).copy()
    if scene.style == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:side, 0:side] / side
        ramp = np.cos(angle) * x + np.sin(angle) * y
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        canvas *= (0.8 + 0.35 * ramp)[..., None]
    elif scene.style == "noisy":
        canvas += rng.normal(0.0, 14.0, size=(side, side, 1))
    elif scene.style == "grid":
        step = max(4, side // 8)
        lines = np.zeros((side, side), dtype=bool)
        lines[::step, :] = True
        lines[:, ::step] = True
        canvas[lines] *= 0.82
    return np.clip(canvas, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, size: int, seed: int) -> Image.Image:
    """The RGB image of `scene` at `size` x `size` pixels."""
    side = size * SUPERSAMPLE
    period = max(4, round(side / 21))
    rng = np.random.default_rng((seed, scene.index, 1))
    canvas = _background(scene, side, rng)
    for obj in scene.objects:
        x1, y1 = round(obj.box[0] * side), round(obj.box[1] * side)
        extent = max(2, round((obj.box[2] - obj.box[0]) * side))
        region = canvas[y1 : y1 + extent, x1 : x1 + extent]
        h, w = region.shape[:2]
        inside = shape_mask(obj.shape, extent)[:h, :w]
        overlay = pattern_mask(obj.pattern, extent, period)[:h, :w] & inside
        region[inside] = np.asarray(COLOURS[obj.colour], dtype=np.uint8)
        region[overlay] = _overlay_colour(COLOURS[obj.colour])
    return Image.fromarray(canvas, mode="RGB").reduce(SUPERSAMPLE)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
