"""Slice montages for volumes: a grid of evenly spaced slices, each with the map overlaid.

A volume map cannot be shown as one picture. The montage cuts it along its first spatial
axis (``D`` of ``[D, H, W]``; the file's first voxel axis for NIfTI) into evenly spaced
slices and lays them out in a grid, each labelled with its slice index. The map is scaled
once for the whole volume, so a colour means the same in every slice.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import DisplayMap, to_display
from .overlay import mask_outline, overlay

CAPTION = 22


def slice_indices(depth: int, n: int = 12) -> list[int]:
    """``n`` evenly spaced slice indices in ``[0, depth)`` (all slices if ``depth <= n``):
    the centres of ``n`` equal slabs, so the outermost (often empty) slices are skipped."""
    if depth <= n:
        return list(range(depth))
    return [int((i + 0.5) * depth / n) for i in range(n)]


def montage(volume: np.ndarray, map_: np.ndarray | None = None, signed: bool = False,
            n_slices: int = 12, columns: int = 4, tile: int = 128,
            clip_percentile: float | None = None, mask: np.ndarray | None = None,
            disp: DisplayMap | None = None) -> np.ndarray:
    """``uint8 [H', W', 3]`` grid of slices of ``volume`` (``uint8 [D, H, W, 3]``).

    ``map_`` (``[D, H, W]`` raw values, optional) is scaled once over the whole volume (or
    given already scaled as ``disp``) and overlaid on each slice; ``mask`` (bool
    ``[D, H, W]``) is outlined in green. Each slice is enlarged to ``tile`` pixels on its
    longer side and labelled ``slice i/D``.
    """
    if volume.ndim != 4 or volume.shape[-1] != 3:
        raise ValueError(f"montage needs uint8 [D, H, W, 3] slices, got {volume.shape}")
    depth, h, w = volume.shape[:3]
    if map_ is not None and disp is None:
        disp = to_display(map_, signed, clip_percentile)
    if disp is not None and disp.values.shape != (depth, h, w):
        raise ValueError(f"map {disp.values.shape} does not match volume {(depth, h, w)}")
    picks = slice_indices(depth, n_slices)
    columns = max(1, min(columns, len(picks)))
    rows = -(-len(picks) // columns)
    scale = tile / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (columns * tw, rows * (th + CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for n, d in enumerate(picks):
        pixels = volume[d]
        if mask is not None:
            pixels = mask_outline(pixels, np.asarray(mask[d], dtype=bool))
        if disp is not None:
            one = DisplayMap(disp.values[d], disp.signed, disp.degenerate, disp.scale)
            pixels = overlay(pixels, one)
        img = Image.fromarray(pixels).resize((tw, th), Image.BILINEAR)
        x0, y0 = (n % columns) * tw, (n // columns) * (th + CAPTION)
        canvas.paste(img, (x0, y0))
        draw.text((x0 + 4, y0 + th + 5), f"slice {d}/{depth}", fill=(30, 30, 30), font=font)
    return np.asarray(canvas)


def stack(rows: list[tuple[str, np.ndarray]], pad: int = 6) -> np.ndarray:
    """Stack titled pictures (``uint8 [h, w, 3]``) vertically, each under its title line:
    one montage per method or per baseline in one PNG."""
    width = max(p.shape[1] for _, p in rows)
    height = sum(p.shape[0] + CAPTION + pad for _, p in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    y = 0
    for title, pixels in rows:
        draw.text((6, y + 5), title, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(pixels), (0, y + CAPTION))
        y += pixels.shape[0] + CAPTION + pad
    return np.asarray(canvas)
