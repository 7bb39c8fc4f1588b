"""The window grid of sliding-window occlusion (:mod:`.occlusion`): window and stride
per axis, the start of each window along an axis, and the pixel map from the grid of
per-window drops (the windows covering a pixel, aggregated)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import InputError

BORDERS = ("cover", "truncate")
AGGREGATIONS = ("mean", "sum", "max")


def per_axis(value: Any, name: str) -> tuple[int, ...] | None:
    """``None``, a positive int, or a tuple of positive ints -> a tuple (or None)."""
    if value is None:
        return None
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1
                         for v in values):
        raise InputError(
            f"{name} must be a positive integer or one per spatial axis, e.g. 16 or (16, 16); "
            f"got {value!r}" + (" (a stride of 0 would never move the window)"
                               if name == "stride" else "")
        )
    return values


def window_starts(size: int, window: int, stride: int, border: str) -> list[int]:
    """Start index of each window along one axis.

    ``"cover"``: ``0, s, 2s, ...`` while the window fits, plus a last window flush with the
    border if the image would otherwise have uncovered pixels. ``"truncate"`` (Captum):
    ``0, s, ..., ceil((size - k) / s) * s``; the last window may stick out and is cut.
    """
    if border == "truncate":
        return [i * stride for i in range(math.ceil((size - window) / stride) + 1)]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def indicator(size: int, window: int, starts: Sequence[int], like: torch.Tensor
              ) -> torch.Tensor:
    """``[n_windows, size]``: 1 where window ``p`` covers index ``i``."""
    idx = torch.arange(size, device=like.device)
    s = torch.tensor(list(starts), device=like.device)[:, None]
    return ((idx >= s) & (idx < s + window)).to(like.dtype)


def aggregate(grid: torch.Tensor, ind: Sequence[torch.Tensor], how: str) -> torch.Tensor:
    """Pixel map ``[B, T, *spatial]`` from the window grid ``[B, T, *n]``.

    Windows form a product over the axes, so the sum over the windows covering a pixel is
    a chain of matrix products with the per-axis indicators. Pixels that no window covers
    (only when ``stride > window``) are NaN.
    """
    dims = grid.dim() - 2
    if how == "max":
        out = torch.full((*grid.shape[:2], *(m.shape[1] for m in ind)), -math.inf,
                         dtype=grid.dtype, device=grid.device)
        for pos in itertools.product(*(range(m.shape[0]) for m in ind)):
            sl = tuple(m[p].nonzero().flatten() for m, p in zip(ind, pos, strict=True))
            sl = tuple(slice(int(s[0]), int(s[-1]) + 1) for s in sl)
            region = out[(slice(None), slice(None), *sl)]
            torch.maximum(region, grid[(slice(None), slice(None), *pos)]
                          .view(*grid.shape[:2], *([1] * dims)), out=region)
        return out.masked_fill(out == -math.inf, math.nan)
    total = grid
    for axis, m in enumerate(ind):
        total = torch.tensordot(total.movedim(2 + axis, -1), m, dims=1).movedim(-1, 2 + axis)
    count = _count(ind)
    if how == "sum":
        return total.masked_fill(count == 0, math.nan)
    return total / count.masked_fill(count == 0, math.nan)


def _count(ind: Sequence[torch.Tensor]) -> torch.Tensor:
    count = ind[0].sum(0)
    for m in ind[1:]:
        count = count[..., None] * m.sum(0)
    return count
