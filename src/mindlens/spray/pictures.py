"""The audit's pictures, shared by ``audit.html`` and the web app's audit view: a
strategy's colour, a mean map in colour, and an image with its map laid over and the
expert's marks outlined. Everything is drawn by :mod:`mindlens.render`.

The maps are shown as the audit measures them (:mod:`.location`): their positive part, the
evidence *for* the explained class. An image is stretched to the map's square frame, as the
model's default resize (``stretch``) stretched it to its input.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image

from ..errors import InputError
from ..render.colors import colorize, to_display
from ..render.evidence import as_rgb, outline_picture
from ..render.overlay import overlay


def cluster_colour(i: int) -> str:
    """The colour of strategy ``i`` (matplotlib's ``tab10``) as ``#rrggbb``."""
    r, g, b, _ = matplotlib.colormaps["tab10"](i % 10)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def evidence(map_: np.ndarray, size: int | None = None) -> np.ndarray:
    """The positive part of a ``[S, S]`` map (NaN as 0), bilinearly resized to ``size``."""
    a = np.clip(np.nan_to_num(np.asarray(map_, dtype=np.float32)), 0, None)
    if size is not None and a.shape != (size, size):
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
    return a


def map_pixels(map_: np.ndarray) -> np.ndarray:
    """A map (e.g. a strategy's mean map) in colour, ``uint8 [S, S, 3]``."""
    return colorize(to_display(evidence(map_), signed=False))


@dataclass
class ImagePicture:
    """``uint8 [size, size, 3]``; ``found``: whether the image file could be read (else
    the picture is the map alone); the name of the colour outlining the marks, if any."""

    pixels: np.ndarray
    found: bool
    marks_colour: str | None


def _read(path: str, size: int, max_pixels: int | None) -> np.ndarray | None:
    from ..io import read_image

    try:
        arr = read_image(path, size=(size, size), max_pixels=max_pixels)
    except (InputError, OSError):  # the file moved or is unreadable: the map alone
        return None
    return np.asarray(Image.fromarray(as_rgb(arr)).resize((size, size), Image.BILINEAR))


def _marks(mask: str | None, size: int) -> np.ndarray | None:
    if not mask:
        return None
    from ..evaluate import load_mask

    try:
        return load_mask(mask, (size, size), mask).numpy()
    except (InputError, OSError):
        return None


def image_picture(path: str, map_: np.ndarray | None, size: int, mask: str | None = None,
                  max_pixels: int | None = None) -> ImagePicture:
    """The image file at ``path`` at ``size x size``, with ``map_`` laid over (none:
    the image alone) and the marks of the ``mask`` file outlined in a colour the image
    lacks."""
    image = _read(path, size, max_pixels)
    if image is None:
        shown = map_ if map_ is not None else np.zeros((size, size), np.float32)
        return ImagePicture(colorize(to_display(evidence(shown, size), signed=False)), False,
                            None)
    if map_ is not None:
        image = overlay(image, to_display(evidence(map_, size), signed=False))
    marks = _marks(mask, size)
    if marks is None or not marks.any():
        return ImagePicture(image, True, None)
    pic = outline_picture(image, marks=marks, display=size)
    return ImagePicture(pic.pixels, True, pic.marks_colour)
