"""Where a group of relevance maps puts its evidence: inside the marked regions, at a
fixed place of the frame or following the content, in the centre or at the border.

All measures use the positive part of each map, scaled to sum 1 per map:

- ``border``: the share in the outer eighth of the frame on each side;
- ``consistency``: ``‖mean p‖² / mean ‖p‖²``, 1 when every member puts its evidence on the
  same pixels, about ``1/m`` when it spreads over ``m`` disjoint places (evidence that
  follows the content); a strategy with ``consistency >= FIXED`` sits at a fixed place;
- ``where``: the cells of a 3x3 grid that hold at least 20% of the mean map, in words.
"""

from __future__ import annotations

import numpy as np

FIXED = 0.8
SPREAD = "spread over the image"
CELLS = (("upper-left corner", "top edge", "upper-right corner"),
         ("left edge", "centre", "right edge"),
         ("lower-left corner", "bottom edge", "lower-right corner"))


def positive_unit(maps: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(maps, dtype=np.float32), 0, None)
    s = p.sum((1, 2), keepdims=True)
    return np.divide(p, s, out=np.zeros_like(p), where=s > 0)


def mean_map(maps: np.ndarray) -> np.ndarray:
    """The mean of the maps' positive parts, each scaled to sum 1 (a group's evidence)."""
    return positive_unit(maps).mean(0)


def border_share(p: np.ndarray) -> np.ndarray:
    h, w = p.shape[-2:]
    bh, bw = max(1, h // 8), max(1, w // 8)
    inner = p[:, bh:h - bh, bw:w - bw].sum((1, 2))
    return p.sum((1, 2)) - inner


def consistency(p: np.ndarray) -> float:
    energy = float((p ** 2).sum((1, 2)).mean())
    return float((p.mean(0) ** 2).sum() / energy) if energy > 0 else 0.0


def where(mean: np.ndarray, least: float = 0.2) -> str:
    """The 3x3 cells holding at least ``least`` of ``mean`` (a map summing to 1)."""
    h, w = mean.shape
    ys, xs = np.linspace(0, h, 4).round().astype(int), np.linspace(0, w, 4).round().astype(int)
    share = np.array([[mean[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].sum() for j in range(3)]
                      for i in range(3)])
    cells = sorted(((share[i, j], CELLS[i][j]) for i in range(3) for j in range(3)
                    if share[i, j] >= least), reverse=True)
    if not cells:
        return SPREAD
    names = [c[1] for c in cells]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(maps: np.ndarray) -> dict[str, object]:
    """The location figures of a group of ``[n, H, W]`` maps."""
    p = positive_unit(maps)
    mean = p.mean(0)
    total = mean.sum()
    return {"border": float(border_share(p).mean()), "consistency": consistency(p),
            "where": where(mean / total if total > 0 else mean),
            "fixed": consistency(p) >= FIXED}
