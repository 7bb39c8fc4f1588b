"""Similarity of two batches of maps, per image: Spearman rank correlation, SSIM, cosine.

Used by the randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps", NeurIPS) and by class discrimination (Sixt et al. 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import check_maps


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..n`` along the last dim of ``[N, n]``, ties get their mean rank (as
    ``scipy.stats.rankdata(method="average")``)."""
    order = values.argsort(dim=1, stable=True)
    sorted_vals = values.gather(1, order)
    ranks = torch.empty_like(values, dtype=torch.float64)
    n = values.shape[1]
    for i in range(values.shape[0]):
        _, counts = torch.unique_consecutive(sorted_vals[i], return_counts=True)
        ends = counts.cumsum(0).double()
        mean_rank = ends - (counts.double() - 1) / 2  # 1-based mean of each tie group
        per_pos = mean_rank.repeat_interleave(counts)
        ranks[i, order[i]] = per_pos[:n]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of ``[N, n]``; NaN where one row is constant."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    out = (a * b).sum(dim=1) / den
    return out.masked_fill(den == 0, float("nan"))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of two batches of maps ``[N, H, W]`` -> ``[N]``
    (Pearson correlation of average ranks, as ``scipy.stats.spearmanr``)."""
    check_maps(a, "a")
    check_maps(b, "b")
    return pearson(average_ranks(a.flatten(1)), average_ranks(b.flatten(1)))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the flattened maps, per image ``[N]``."""
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def normalize01(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale every map to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1).double()
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    return ((flat - lo) / span.clamp_min(1e-30)).view(maps.shape)


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = 7, data_range: float = 1.0,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) per image ``[N]``.

    Same definition as ``skimage.metrics.structural_similarity`` with its defaults: a
    uniform ``win_size`` x ``win_size`` window, sample covariances, the mean taken over the
    positions where the window fits. Adebayo et al. 2018 apply it to maps normalised to
    [0, 1]; do that first with :func:`normalize01` (``data_range`` is then 1).
    """
    check_maps(a, "a")
    check_maps(b, "b")
    x, y = a.double()[:, None], b.double()[:, None]
    n = win_size * win_size
    cov_norm = n / (n - 1)
    kernel = torch.full((1, 1, win_size, win_size), 1.0 / n, dtype=torch.float64,
                        device=x.device)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)  # 'valid': only where the window fits

    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)
