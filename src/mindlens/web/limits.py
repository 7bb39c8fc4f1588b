"""What an upload may cost: bytes, pixels, and the image decoded from its bytes only.

The content type a client sends is never trusted: the bytes are decoded by Pillow, which
reads the format from the file itself. The pixel count is read from the header *before*
any pixel is decoded, so a decompression bomb (a small PNG that claims 100 000 x 100 000
pixels) is refused at once and costs no memory.

This module is the web app's one place for these limits (the hardening work adds a pixel
limit for files to :mod:`mindlens.io`; uploads arrive as bytes and are checked here).
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import io as mio
from ..errors import InputError

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000


class TooLarge(InputError):
    """The upload exceeds a limit (HTTP 413)."""


def check_pixels(width: int, height: int, limit: int, source: str) -> None:
    """Refuse an image of more than ``limit`` pixels, from its header."""
    if width * height > limit:
        raise TooLarge(f"{source} has {width}x{height} = {width * height:,} pixels, more than "
                       f"the limit of {limit:,} (mindlens serve --max-pixels)")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                 source: str = "the upload") -> np.ndarray:
    """``[H, W, C]`` pixels from an image file's bytes, decoded once; the size is checked
    from the header before decoding. 8-bit grey/RGB(A) images stay ``uint8`` (the model's
    preprocessing scales them by 255, exactly as :func:`mindlens.io.pil_to_array` would:
    converting here would only double the work); other depths are ``float32`` in
    ``[0, 1]``."""
    if not data:
        raise InputError(f"{source} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: reads the header only
            check_pixels(img.width, img.height, max_pixels, source)
            img.load()
            return _pixels(img, source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise TooLarge(f"{source} is too large to decode ({e})") from None
    except UnidentifiedImageError:
        raise InputError(f"{source} is not an image mindlens can read (PNG, JPEG, TIFF, BMP, "
                         f"GIF or WebP)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{source} is corrupt or truncated ({e})") from None


def _pixels(img: Image.Image, source: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise InputError(f"{source} has zero size ({img.width}x{img.height})")
    img = mio.normal_mode(img)
    if img.mode in ("L", "RGB"):
        a = np.asarray(img)
        return a[..., None] if a.ndim == 2 else a
    if img.mode in ("LA", "RGBA"):
        return np.asarray(img.convert("RGBA"))
    return mio.pil_to_array(img, source=source)


def digest(*parts: bytes) -> str:
    """SHA-256 of the parts (the cache key of an image and its mask)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()
