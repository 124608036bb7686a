"""Image loading and FG-CLIP preprocessing: EXIF orientation, any PIL mode to RGB, squash-resize, CLIP mean/std.

FG-CLIP resizes every image to S x S before the CLIP processor (docs/model.md, "Image preprocessing: squash, never
crop"): the image is squashed, not cropped, so normalised xyxy boxes stay valid. `ImagePreprocessor` does exactly
that and returns a (3, S, S) float tensor; `load_rgb` is the single entry point that turns a path or encoded bytes
into an RGB PIL image.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageConfig:
    """Preprocessing settings: output side `size` (224 base, 336 large, 64 for the synthetic world)."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = Image.Resampling.BICUBIC


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, then convert any mode to RGB (transparent areas composited on white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: scale to 8 bits instead of letting PIL clip everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high == low else (array - low) * (255.0 / (high - low))
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def load_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Open a path or encoded bytes, decode fully (so truncated files fail here) and return RGB."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(handle) as image:
        # lmms-eval sets PIL's global LOAD_TRUNCATED_IMAGES at import, which would pad a truncated file silently
        previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        return to_rgb(image)


class ImagePreprocessor:
    """Squash-resize to S x S and normalise with CLIP mean/std -> float32 tensor (3, S, S)."""

    def __init__(self, config: ImageConfig | None = None):
        self.config = config or ImageConfig()
        self._mean = np.asarray(self.config.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        self._scale = 1.0 / (np.asarray(self.config.std, dtype=np.float32).reshape(3, 1, 1) * 255.0)

    def squash(self, image: Image.Image) -> Image.Image:
        size = self.config.size
        return image if image.size == (size, size) else image.resize((size, size), resample=self.config.resample)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = self.squash(image if image.mode == "RGB" else to_rgb(image))
        array = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)
        return torch.from_numpy((array - self._mean) * self._scale)

    def load(self, source: str | os.PathLike | bytes) -> torch.Tensor:
        return self(load_rgb(source))
