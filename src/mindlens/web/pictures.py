"""The images a server offers besides uploads: the files of ``--images`` (with masks of
``--masks`` by file stem) or fresh demo images, each addressed by an id, never by a path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES
from .limits import decode_image


@dataclass
class Picture:
    """An image the server knows: a file of ``--images`` or a demo image, by id only."""

    id: str
    name: str
    load: Callable[[], np.ndarray]
    mask: Callable[[], np.ndarray | None]
    has_mask: bool


def folder_pictures(images: Path, masks: Path | None, max_pixels: int) -> list[Picture]:
    """The image files of a folder (and their masks by file stem), addressed by id."""
    files = sorted(f for f in images.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    by_stem = {} if masks is None else {f.stem: f for f in masks.iterdir() if f.is_file()}
    out = []
    for i, f in enumerate(files):
        m = by_stem.get(f.stem)
        out.append(Picture(
            str(i), f.name, (lambda f=f: decode_image(f.read_bytes(), max_pixels, f.name)),
            (lambda m=m: None if m is None else
             decode_image(m.read_bytes(), max_pixels, m.name).max(axis=-1) > 0),
            m is not None))
    return out


def demo_pictures(seed: int = 2026, n: int = 8) -> list[Picture]:
    """Fresh demo retina images with their exact lesion masks."""
    from ..demo import retina

    pixels, labels, masks = retina.generate(n, seed)
    return [Picture(str(i), f"retina {i + 1} ({'diseased' if y == 1 else 'healthy'})",
                    (lambda p=p: np.asarray(p)),  # uint8, scaled by preprocess
                    (lambda m=m, y=y: np.asarray(m, bool) if y == 1 else None), bool(y == 1))
            for i, (p, y, m) in enumerate(zip(pixels, labels, masks, strict=True))]
