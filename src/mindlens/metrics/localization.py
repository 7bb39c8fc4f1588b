"""Localisation metrics: does the relevance map point at what an expert marked?

All take ``maps`` float ``[N, H, W]`` (one 2-D map per image, at input resolution) and
``masks`` bool ``[N, H, W]`` (ground truth; the union of boxes for box annotations) and
return one score per image ``[N]``; an empty mask gives NaN, and so does a flat (constant)
map for the metrics that rank pixels (its "strongest point" is arbitrary). Average with
``torch.nanmean`` and report how many images were NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from ._common import check_masks, empty_to_nan, flat_to_nan


def argmax_points(maps: torch.Tensor) -> torch.Tensor:
    """Row/column of each map's maximum ``[N, 2]``; ties: the first in row-major order."""
    flat = maps.flatten(1)
    top = flat.max(dim=1).values
    first = (flat == top[:, None]).to(torch.uint8).argmax(dim=1)  # first True
    w = maps.shape[2]
    return torch.stack([first // w, first % w], dim=1)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor, tolerance: float = 15) -> torch.Tensor:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016): 1.0 if the map's maximum lies within ``tolerance`` pixels of the mask, else 0.

    The point is the first maximum in row-major order. Hit iff the Euclidean distance ``d``
    from the point to the nearest mask pixel satisfies ``d < tolerance`` (TorchRay's
    ``dist² < τ²``) or ``d == 0`` (so ``tolerance=0`` means "inside the mask", which is
    Quantus' ``PointingGame``). The paper's dataset score is the mean over classes of the
    per-class hit rate; group the per-image values by class for that.
    """
    check_masks(maps, masks)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance}")
    _, h, w = maps.shape
    pts = argmax_points(maps).to(maps.device)
    rows = torch.arange(h, device=maps.device, dtype=torch.float64)
    cols = torch.arange(w, device=maps.device, dtype=torch.float64)
    dr = (rows[None, :] - pts[:, :1].double()) ** 2  # [N, H]
    dc = (cols[None, :] - pts[:, 1:].double()) ** 2  # [N, W]
    d2 = dr[:, :, None] + dc[:, None, :]
    d2 = d2.masked_fill(~masks, float("inf")).flatten(1).min(dim=1).values
    hit = (d2 < float(tolerance) ** 2) | (d2 == 0)
    return flat_to_nan(empty_to_nan(hit.double(), masks), maps)


def energy_pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., "Score-CAM", CVPRW 2020): the share of the
    positive map energy inside the mask, ``Σ_{i∈S} L_i / Σ_i L_i`` with ``L = max(map, 0)``.

    The paper's min-max normalisation does not change the ratio when the map's minimum is
    <= 0; a map with no positive value gives NaN.
    """
    return relevance_mass_accuracy(maps, masks)


def relevance_mass_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy (Arras, Osman, Samek, "CLEVR-XAI", Information Fusion
    2022): ``Σ_{i∈S} R_i / Σ_i R_i`` with negative relevance set to 0 first.

    NaN for an empty mask or a map without positive relevance.
    """
    check_masks(maps, masks)
    pos = maps.double().clamp_min(0).flatten(1)
    total = pos.sum(dim=1)
    inside = (pos * masks.flatten(1)).sum(dim=1)
    out = (inside / total).masked_fill(total == 0, float("nan"))
    return empty_to_nan(out, masks)


def relevance_rank_accuracy(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras, Osman, Samek 2022): with ``K = |S|``, the share of
    the ``K`` highest-relevance pixels that lie in the mask.

    Ranking uses a stable descending sort (ties keep row-major order). Positive-part
    clipping does not change the top-K set except among zero ties, so it is not applied.
    """
    check_masks(maps, masks)
    flat = maps.flatten(1)
    m = masks.flatten(1)
    k = m.sum(dim=1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    in_mask = m.gather(1, order)
    rank = torch.arange(flat.shape[1], device=flat.device)[None, :]
    hits = (in_mask & (rank < k[:, None])).sum(dim=1).double()
    return flat_to_nan(empty_to_nan(hits / k.clamp_min(1).double(), masks), maps)


def iou(maps: torch.Tensor, masks: torch.Tensor, fraction: float = 0.15) -> torch.Tensor:
    """Intersection over union of the thresholded map and the mask.

    The map is binarised at ``fraction`` of its maximum (``map >= fraction * max``; Grad-CAM,
    Selvaraju et al. 2017, used 15 % for its localisation boxes). A map whose maximum is
    <= 0 selects nothing (IoU 0).
    """
    check_masks(maps, masks)
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be in [0, 1], got {fraction}")
    flat = maps.flatten(1)
    top = flat.max(dim=1, keepdim=True).values
    sel = (flat >= fraction * top) & (top > 0)
    m = masks.flatten(1)
    inter = (sel & m).sum(dim=1).double()
    union = (sel | m).sum(dim=1).double()
    return flat_to_nan(empty_to_nan(inter / union.clamp_min(1), masks), maps)


def near_mask(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Bool ``[N, H, W]``: the pixels a pointing-game point may land on and still hit, i.e.
    within ``tolerance`` of the mask (``d < tolerance``, or on the mask)."""
    r = math.ceil(tolerance)
    mk = masks.double()[:, None]
    if r == 0:
        return masks.clone()
    off = torch.arange(-r, r + 1, dtype=torch.float64, device=masks.device)
    disc = ((off[:, None] ** 2 + off[None, :] ** 2) < tolerance ** 2).double()[None, None]
    return (F.conv2d(mk, disc, padding=r)[:, 0] > 0) | masks


def pointing_chance(masks: torch.Tensor, tolerance: float = 15) -> torch.Tensor:
    """What a point drawn uniformly at random scores in the pointing game, per image
    ``[N]``: the share of pixels within ``tolerance`` of the mask (NaN for an empty mask).
    A map of noise points at such a point; so does any map that knows nothing."""
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance}")
    near = near_mask(masks, tolerance)
    return empty_to_nan(near.flatten(1).double().mean(dim=1), masks)


def centre_hit(masks: torch.Tensor, tolerance: float = 15) -> torch.Tensor:
    """The pointing game of a map that always peaks at the image centre (the "center
    baseline" of Zhang et al. 2016), per image ``[N]``: 1.0 or 0.0, NaN for an empty mask."""
    _, h, w = masks.shape
    centre = torch.zeros(1, h, w, dtype=torch.float64, device=masks.device)
    centre[0, (h - 1) // 2, (w - 1) // 2] = 1.0
    return pointing_game(centre.expand(len(masks), h, w), masks, tolerance)


def mask_share(masks: torch.Tensor) -> torch.Tensor:
    """The share of the image a mask covers, per image ``[N]`` (NaN for an empty mask): the
    relevance mass accuracy of a uniform map, the chance level of relevance mass."""
    return empty_to_nan(masks.flatten(1).double().mean(dim=1), masks)


def default_tolerance(size: tuple[int, ...]) -> float:
    """The pointing-game tolerance for an input of ``size`` pixels ``(H, W)``: 15 px at
    224 px (Zhang et al.'s setting), proportionally less for smaller inputs, so that the
    disc it allows covers the same share of the image."""
    return 15.0 * min(size[-2:]) / 224.0
