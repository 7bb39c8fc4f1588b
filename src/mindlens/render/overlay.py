"""Heat maps laid over images, and PNG encoding for files and the HTML report."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from .colors import DisplayMap, colorize
from .evidence import as_rgb


def overlay(image: np.ndarray, disp: DisplayMap, alpha: float = 0.55) -> np.ndarray:
    """Blend a coloured map over an image: ``uint8`` (or float in [0, 1]) grayscale
    ``[H, W]`` / ``[H, W, 1]`` or RGB(A) ``[H, W, 3|4]``; returns ``uint8 [H, W, 3]``.

    The map's opacity follows its magnitude, so weak relevance leaves the image visible
    and the picture stays readable where the method found nothing.
    """
    image = as_rgb(image)
    colors = colorize(disp).astype(np.float32)
    strength = np.abs(disp.values)[..., None]
    weight = alpha * np.clip(strength * 1.5, 0, 1)
    base = image.astype(np.float32)
    if base.shape[:2] != colors.shape[:2]:
        base = np.asarray(Image.fromarray(image).resize(colors.shape[1::-1], Image.BILINEAR),
                          dtype=np.float32)
    return (base * (1 - weight) + colors * weight).round().clip(0, 255).astype(np.uint8)


def mask_outline(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)
                 ) -> np.ndarray:
    """Draw the outline of a bool mask (e.g. an expert's lesion marks) on an image
    (grayscale or RGB, as for :func:`overlay`); returns ``uint8 [H, W, 3]``."""
    image = as_rgb(image)
    m = np.asarray(mask).astype(bool)
    edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
    out = image.copy()
    out[edge] = color
    return out


def png_bytes(pixels: np.ndarray, upscale_to: int | None = None) -> bytes:
    """PNG-encode ``uint8 [H, W]`` or ``[H, W, 3]``; small images are enlarged (nearest)
    to ``upscale_to`` pixels so a 32x32 map is not a smudge in a browser."""
    img = Image.fromarray(pixels)
    if upscale_to and max(img.size) < upscale_to:
        factor = max(1, upscale_to // max(img.size))
        img = img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_data_uri(pixels: np.ndarray, upscale_to: int | None = 224) -> str:
    """A ``data:image/png;base64,...`` URI for embedding in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels, upscale_to)).decode()
