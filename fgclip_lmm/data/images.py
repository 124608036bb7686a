"""Image loading and FG-CLIP preprocessing: EXIF orientation, any PIL mode to RGB, squash-resize, CLIP mean/std.

FG-CLIP resizes every image to S x S before the CLIP processor (docs/model.md, "Image preprocessing: squash, never
crop"): the image is squashed, not cropped, so normalised xyxy boxes stay valid. `ImagePreprocessor` does exactly
that and returns a (3, S, S) float tensor; `load_rgb` is the single entry point that turns a path or encoded bytes
into an RGB PIL image (training, datagen, eval-clip, the lmms-eval plugin and the demo plots all decode through it).

Pixel budget: an image whose header declares more than `max_pixels` pixels (default 50 MP; the reader configs'
`max_image_pixels`, the `--max-image-pixels` options, or FGCLIP_MAX_IMAGE_PIXELS for every process; 0 = no
limit) raises `ImageTooLargeError` before it is decoded, which the readers count as the bad record
`image_too_large`, instead of a multi-GB decode.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from fgclip_lmm.errors import FGClipError, InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "FGCLIP_MAX_IMAGE_PIXELS"


class ImageTooLargeError(FGClipError, ValueError):
    """An image above the pixel budget (rejected from its header, before decoding)."""


def max_image_pixels(override: int | None = None) -> int:
    """The pixel budget: `override` if given, else FGCLIP_MAX_IMAGE_PIXELS, else 50 MP (0 = no limit)."""
    if override is not None:
        value = override
    else:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        try:
            value = int(float(raw)) if raw else DEFAULT_MAX_PIXELS
        except ValueError:
            raise InputError(f"{MAX_PIXELS_ENV}={raw!r}: expected a number of pixels (0 = no limit)") from None
    if value < 0:
        raise InputError(f"max_image_pixels must be >= 0 (0 = no limit), got {value}")
    return value


@dataclass(frozen=True)
class ImageConfig:
    """Preprocessing settings: output side `size` (224 base, 336 large, 64 for the synthetic world)."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = Image.Resampling.BICUBIC
    max_pixels: int | None = None  # pixel budget per image; None = FGCLIP_MAX_IMAGE_PIXELS or 50 MP


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


def load_rgb(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> Image.Image:
    """Open a path or encoded bytes, check the pixel budget, decode fully (so truncated files fail here), RGB."""
    limit = max_image_pixels(max_pixels)
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    name = "image bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    if Image.MAX_IMAGE_PIXELS is not None and (not limit or limit > Image.MAX_IMAGE_PIXELS):
        Image.MAX_IMAGE_PIXELS = limit or None  # PIL's own bomb check must not refuse what the budget allows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget below decides
            image = Image.open(handle)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{name}: {error}") from error
    with image:
        pixels = image.width * image.height
        if limit and pixels > limit:
            raise ImageTooLargeError(f"{name}: {image.width}x{image.height} = {pixels / 1e6:.3g} MP exceeds the "
                                     f"{limit / 1e6:.3g} MP pixel budget (max_image_pixels / {MAX_PIXELS_ENV})")
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
        return self(load_rgb(source, self.config.max_pixels))
