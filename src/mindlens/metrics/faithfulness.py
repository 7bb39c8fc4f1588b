"""Deletion and insertion curves (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling
for Explanation of Black-box Models", BMVC 2018).

Pixels are ordered by decreasing relevance (ties broken at random with a fixed seed).
Deletion replaces them, ``ceil(H*W / steps)`` per step, by a substrate (zeros in model
space); insertion starts from a blurred copy and puts the original pixels back. The curve is
the softmax probability of the class predicted on the clean image; the score is the area
under it on [0, 1] by the trapezoid rule, ``(Σ s_i - s_0/2 - s_N/2) / N``. A flat map
orders no pixel before another: its AUC is NaN (a random order is :func:`random_order_aucs`'s
baseline, not the map's score). Low deletion AUC
and high insertion AUC mean the map ranks pixels the way the model uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ._common import check_maps, flat_to_nan

ModelFn = Callable[[torch.Tensor], torch.Tensor]
Seed = int | Sequence[int]


@dataclass
class Curves:
    """``auc`` ``[N]``, ``curves`` ``[N, steps + 1]`` (probabilities), ``classes`` ``[N]``."""

    auc: torch.Tensor
    curves: torch.Tensor
    classes: torch.Tensor


def gaussian_blur(x: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect padding (RISE's insertion start)."""
    r = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    pad = size // 2
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


def generators(seed: Seed, n: int) -> list[torch.Generator]:
    """One generator shared by all ``n`` images (an int seed, drawn in turn) or one per
    image (a sequence of seeds: results then do not depend on how images are batched)."""
    if isinstance(seed, int):
        return [torch.Generator().manual_seed(seed)] * n
    if len(seed) != n:
        raise InputError(f"{len(seed)} seeds for {n} images: give one seed or one per image")
    return [torch.Generator().manual_seed(int(s)) for s in seed]


def pixel_order(maps: torch.Tensor, seed: Seed = 0) -> torch.Tensor:
    """Flat pixel indices by decreasing relevance, random tie-breaking with ``seed``."""
    flat = maps.flatten(1).double().cpu()
    perm = torch.stack([torch.randperm(flat.shape[1], generator=g)
                        for g in generators(seed, len(flat))])
    shuffled = flat.gather(1, perm)
    order = shuffled.argsort(dim=1, descending=True, stable=True)
    return perm.gather(1, order).to(maps.device)


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of ``[N, steps + 1]`` curves sampled evenly on [0, 1]."""
    steps = curves.shape[1] - 1
    return (curves.sum(dim=1) - curves[:, 0] / 2 - curves[:, -1] / 2) / steps


@torch.no_grad()
def _curves(model: ModelFn, start: torch.Tensor, finish: torch.Tensor, maps: torch.Tensor,
            steps: int, classes: torch.Tensor, seed: Seed, chunk: int) -> Curves:
    check_maps(maps)
    if start.dim() != 4 or maps.shape != (start.shape[0], *start.shape[2:]):
        raise InputError(
            f"images {tuple(start.shape)} and maps {tuple(maps.shape)} do not match: give "
            f"images [N, C, H, W] and maps [N, H, W] at the same size"
        )
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    n, _, h, w = start.shape
    hw = h * w
    per_step = math.ceil(hw / steps)
    order = pixel_order(maps, seed)
    assert classes is not None
    # rank[i, p] = position of pixel p in the order; at step k pixels with rank < k*per_step
    # are switched from `start` to `finish`
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(n, hw))
    # every (image, step) copy in one stream, cut into passes of `chunk` copies: full
    # passes across images instead of one short pass per image (on a 2-core CPU ResNet-20
    # at 32 px ran 1.5-1.6 ms per copy in passes of 32-64, 2.3 ms in passes of 256)
    rows = n * (steps + 1)
    to_probs = getattr(model, "probabilities", lambda z: z.softmax(dim=1))
    classes = classes.to(start.device)
    flat_curves = torch.empty(rows, dtype=torch.float64, device=start.device)
    for lo in range(0, rows, chunk):
        r = torch.arange(lo, min(rows, lo + chunk), device=start.device)
        img, k = r // (steps + 1), r % (steps + 1)
        switched = (rank[img] < (k[:, None] * per_step)).view(-1, 1, h, w)
        batch = torch.where(switched, finish[img], start[img])
        logits = model(batch)  # a Classifier knows its output kind; a function: softmax
        probs = to_probs(logits).gather(1, classes[img][:, None])[:, 0]
        flat_curves[lo:lo + len(r)] = probs.double()
    curves = flat_curves.view(n, steps + 1)
    return Curves(flat_to_nan(auc(curves), maps), curves, classes)


def deletion(model: ModelFn, images: torch.Tensor, maps: torch.Tensor, steps: int = 100,
             substrate: float = 0.0, classes: torch.Tensor | None = None, seed: Seed = 0,
             chunk: int = 64) -> Curves:
    """Deletion curve and AUC per image (lower = better). ``model``: model-space batch ->
    logits; ``images`` ``[N, C, H, W]`` in model space; ``substrate``: the model-space value
    deleted pixels get (RISE: 0). ``classes``: default, the clean prediction. ``chunk``:
    copies per forward pass."""
    start = images
    finish = torch.full_like(images, substrate)
    if classes is None:
        with torch.no_grad():
            classes = model(images).argmax(dim=1)
    return _curves(model, start, finish, maps, steps, classes, seed, chunk)


def insertion(model: ModelFn, images: torch.Tensor, maps: torch.Tensor, steps: int = 100,
              blur_size: int = 11, blur_sigma: float = 5.0,
              classes: torch.Tensor | None = None, seed: Seed = 0, chunk: int = 64) -> Curves:
    """Insertion curve and AUC per image (higher = better): from a Gaussian-blurred copy
    (``blur_size`` x ``blur_size``, ``blur_sigma``) the original pixels come back in order."""
    blurred = gaussian_blur(images, blur_size, blur_sigma)
    if classes is None:
        with torch.no_grad():
            classes = model(images).argmax(dim=1)
    # switching "start" -> "finish" at rank < k*n: start = blurred, finish = images
    return _curves(model, blurred, images, maps, steps, classes, seed, chunk)


def deletion_auc(model: ModelFn, images: torch.Tensor, maps: torch.Tensor, steps: int = 100,
                 **kwargs: object) -> torch.Tensor:
    """Deletion AUC per image ``[N]``; see :func:`deletion`."""
    return deletion(model, images, maps, steps, **kwargs).auc  # type: ignore[arg-type]


def insertion_auc(model: ModelFn, images: torch.Tensor, maps: torch.Tensor, steps: int = 100,
                  **kwargs: object) -> torch.Tensor:
    """Insertion AUC per image ``[N]``; see :func:`insertion`."""
    return insertion(model, images, maps, steps, **kwargs).auc  # type: ignore[arg-type]


def random_order_aucs(model: ModelFn, images: torch.Tensor, steps: int = 100,
                      classes: torch.Tensor | None = None, seed: Seed = 0,
                      **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion AUC ``[N]`` of a map that knows nothing: pixels in a random
    order (a map of uniform noise drawn from ``seed``). The chance level that a method's
    faithfulness is graded against, on the same images, class and substrate."""
    gens = generators(seed, len(images))
    noise = torch.stack([torch.rand(images.shape[2:], generator=g, dtype=torch.float64)
                         for g in gens]).to(images.device)
    return (deletion(model, images, noise, steps, classes=classes, seed=seed, **kwargs).auc,
            insertion(model, images, noise, steps, classes=classes, seed=seed,
                      **kwargs).auc)
