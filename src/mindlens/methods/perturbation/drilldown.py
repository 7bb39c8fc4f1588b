"""Adaptive drill-down for occlusion, Krypton's second approximation (Nakandala, Kumar,
Papakonstantinou, SIGMOD 2019): run only every ``coarse``-th window position per axis,
fill the positions in between by linear interpolation of the drops, then run the
``refine`` share of the skipped positions where the interpolated drop is largest (so the
regions that matter get their own values) and keep the interpolation elsewhere.

The window grid is a product of per-axis start lists, so interpolation is a chain of
matrix products with one ``[n_fine, n_coarse]`` matrix per axis.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch


def coarse_indices(n: int, step: int) -> list[int]:
    """Every ``step``-th index of ``range(n)``, always with the last one (no
    extrapolation at the far border)."""
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return idx


def interpolation_matrix(coords: Sequence[float], known: Sequence[int], like: torch.Tensor
                         ) -> torch.Tensor:
    """``[len(coords), len(known)]``: row ``i`` holds the weights of position ``i`` for
    linear interpolation, in ``coords`` (window starts: the last one may sit closer),
    between the two known positions around it (a known one gets weight 1 on itself)."""
    n = len(coords)
    m = torch.zeros((n, len(known)), dtype=like.dtype, device=like.device)
    for j in range(len(known) - 1):
        a, b = known[j], known[j + 1]
        for i in range(a, b + 1):
            t = (coords[i] - coords[a]) / (coords[b] - coords[a])
            m[i, j] = 1 - t
            m[i, j + 1] = t
    if len(known) == 1:
        m[:, 0] = 1
    return m


def interpolate(coarse: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, T, *n_coarse]`` -> ``[B, T, *n_fine]`` through the per-axis matrices."""
    out = coarse
    for axis, m in enumerate(mats):
        out = torch.tensordot(out.movedim(2 + axis, -1), m, dims=([-1], [1])
                              ).movedim(-1, 2 + axis)
    return out


def coarse_items(shape: Sequence[int], step: int) -> tuple[list[int], list[list[int]]]:
    """Flat indices (row-major over ``shape``) of the coarse positions, and the coarse
    indices per axis."""
    per_axis = [coarse_indices(n, step) for n in shape]
    strides = [math.prod(shape[a + 1 :]) for a in range(len(shape))]
    items = [sum(i * s for i, s in zip(pos, strides, strict=True))
             for pos in itertools.product(*per_axis)]
    return items, per_axis


def refinement(estimate: torch.Tensor, computed: Sequence[int], share: float
               ) -> list[list[int]]:
    """Per image, the flat positions to run next: the ``share`` of the not yet computed
    positions with the largest interpolated ``|drop|`` (over all targets)."""
    b, n = estimate.shape[0], estimate[0, 0].numel()
    k = round(share * (n - len(computed)))
    if k <= 0:
        return [[] for _ in range(b)]
    score = estimate.abs().flatten(2).amax(dim=1)  # [B, N]
    score[:, list(computed)] = -1
    return [sorted(score[i].topk(k).indices.tolist()) for i in range(b)]
