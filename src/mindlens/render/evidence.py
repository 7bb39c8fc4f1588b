"""The picture a non-expert reads: the photo in its own colours, the most relevant part of
the map drawn as an outline in a colour the photo does not contain, and the expert's marks
outlined in a second such colour.

A heat map laid over a photo fights its colours (inferno's yellow on yellow exudates, dark
red on a red fundus). An outline in a colour chosen per image stays visible on any photo,
and leaves the photo itself unchanged for the reader to judge.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

#: candidate outline colours (name -> RGB), strong and mutually distinct
PALETTE: dict[str, tuple[int, int, int]] = {
    "cyan": (0, 229, 255),
    "magenta": (255, 0, 200),
    "lime": (80, 255, 0),
    "blue": (40, 80, 255),
    "yellow": (255, 225, 0),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
#: the size (longer side, pixels) the picture is drawn at, so outlines stay thin on a
#: 28x28 digit and a 224x224 photo alike
DISPLAY = 320


@dataclass
class Outlined:
    """The picture (``uint8 [H, W, 3]``) and the colour names used, for the legend."""

    pixels: np.ndarray
    evidence_colour: str
    marks_colour: str | None


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` from a grayscale ``[H, W]`` / ``[H, W, 1]`` or RGB(A) image."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255).round().astype(np.uint8) \
            if a.dtype.kind == "f" else a.astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; "
                         f"got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def distinct_colours(image: np.ndarray, n: int = 2) -> list[str]:
    """Names of ``n`` palette colours farthest from the image's own colours: each scored
    by the distance to the nearest 2% of the image's pixels, each pick also kept away from
    the ones before it."""
    px = as_rgb(image).reshape(-1, 3)
    px = (px[_sample(len(px))] if len(px) > 20000 else px).astype(np.float32)
    # per channel on contiguous columns (np.linalg.norm over [N, 3] rows is ~20x slower;
    # the sums run in the same order, so the distances are the same to the bit)
    r, g, b = np.ascontiguousarray(px.T)
    names = list(PALETTE)
    dist = np.empty((len(names), len(px)), np.float32)
    for row, name in zip(dist, names, strict=True):
        pr, pg, pb = (np.float32(v) for v in PALETTE[name])
        x = r - pr
        s = x * x
        x = g - pg
        s += x * x
        x = b - pb
        s += x * x
        np.sqrt(s, out=row)
    scores = dict(zip(names, np.percentile(dist, 2, axis=1).tolist(), strict=True))
    chosen: list[str] = []
    for _ in range(min(n, len(PALETTE))):
        def key(name: str) -> float:
            apart = min((np.linalg.norm(np.subtract(PALETTE[name], PALETTE[c]))
                         for c in chosen), default=441.0)
            return min(scores[name], apart)
        best = max((c for c in PALETTE if c not in chosen), key=key)
        chosen.append(best)
    return chosen


@functools.lru_cache(maxsize=8)
def _sample(n: int, k: int = 20000) -> np.ndarray:
    """The pixels :func:`distinct_colours` scores in an image of ``n`` pixels: a fixed
    random sample (seed 0), drawn once per image size."""
    idx = np.random.default_rng(0).choice(n, k, replace=False)
    idx.flags.writeable = False
    return idx


def _resize(a: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    if tuple(a.shape[:2]) == tuple(size):  # both modes are the identity at scale 1
        return np.asarray(a, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(t, size=size, mode=mode, **kw)[0]
    return out[0].numpy() if a.ndim == 2 else out.permute(1, 2, 0).numpy()


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def outline_picture(image: np.ndarray, map_: np.ndarray | None = None,
                    threshold: float | None = None, marks: np.ndarray | None = None,
                    display: int = DISPLAY, colours: list[str] | None = None) -> Outlined:
    """Enlarge ``image`` (grayscale or RGB) to about ``display`` pixels; outline where
    ``map_ >= threshold`` (the map enlarged bilinearly, so the outline is smooth) and the
    bool ``marks`` (enlarged nearest, so a 2-pixel lesion stays a square). ``colours``:
    :func:`distinct_colours` of ``image``, where the caller has them already."""
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    factor = max(1, display // max(h, w))
    size = (h * factor, w * factor)
    if factor == 1:
        out = rgb.copy()
    else:
        big = _resize(rgb.astype(np.float32), size, "bilinear" if factor <= 2 else "nearest")
        out = big.round().clip(0, 255).astype(np.uint8)
    colours = distinct_colours(rgb, 2) if colours is None else colours
    width = max(2, factor // 3)
    marks_colour = None
    if marks is not None and np.asarray(marks).any():
        m = _resize(np.asarray(marks, np.float32), size, "nearest") > 0.5
        edge = ndimage.binary_dilation(m, iterations=width) & ~m  # just outside the mark
        out[edge] = PALETTE[colours[1]]
        marks_colour = colours[1]
    if map_ is not None and threshold is not None:
        a = np.nan_to_num(np.asarray(map_, np.float32))
        if a.shape != (h, w):
            a = _resize(a, (h, w), "bilinear")
        region = _resize(a, size, "bilinear") >= threshold
        out[_edge(region, width)] = PALETTE[colours[0]]
    return Outlined(out, colours[0], marks_colour)


def desaturate(image: np.ndarray, keep: float = 0.0) -> np.ndarray:
    """A gray (``keep`` of the colour left) copy of an image, as a quiet ground for a
    diverging map."""
    rgb = as_rgb(image).astype(np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return (keep * rgb + (1 - keep) * gray[..., None]).round().clip(0, 255).astype(np.uint8)
