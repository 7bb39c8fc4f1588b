"""Class discrimination: does the map change with the class being explained?

- :func:`class_similarity`: similarity of the maps for the top-1 and the top-2 class of
  the same image (Sixt, Granz, Landgraf, "When Explanations Lie", ICML 2020, "random
  logit" test, here with the runner-up class). Lower = more discriminative.
- :func:`object_share`: on an image with two annotated objects, the share of positive
  relevance on the explained object, ``R(S_c) / (R(S_c) + R(S_c'))``; 1 = all on the
  right object, 0.5 = no preference.
- :func:`relevance_contrast`: ``RMA(c on S_c) - RMA(c on S_c')``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..model import Classifier
from ._common import check_masks, empty_to_nan
from .explainers import ExplainFn
from .localization import relevance_mass_accuracy
from .similarity import cosine, normalize01, spearman, ssim


@dataclass
class ClassSimilarity:
    """Per image ``[N]``: Spearman of ``|maps|``, SSIM of [0, 1]-scaled ``|maps|``, cosine of
    the raw maps; ``classes`` ``[N, 2]`` the top-1 and top-2 classes."""

    spearman: torch.Tensor
    ssim: torch.Tensor
    cosine: torch.Tensor
    classes: torch.Tensor


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three similarities used here between two ``[N, H, W]`` batches of maps."""
    return {
        "spearman": spearman(a.abs(), b.abs()),
        "ssim": ssim(normalize01(a.abs()), normalize01(b.abs())),
        "cosine": cosine(a, b),
    }


def class_similarity(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                     known: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> ClassSimilarity:
    """Explain the top-1 and top-2 predicted class of each image in ``x`` and compare.
    ``known``: ``(classes [N], maps [N, H, W])`` the caller has explained already; used
    as the top-1 maps when ``classes`` are the top-1 classes (else explained here)."""
    x = clf.check_tensor(x)
    probs = clf.predict(x)
    if probs.shape[1] < 2:
        raise InputError("class discrimination needs a model with at least two classes")
    top2 = probs.topk(2, dim=1).indices
    if known is not None and torch.equal(known[0].to(top2.device), top2[:, 0]):
        first = known[1].detach()
    else:
        first = explain(clf, x, top2[:, 0]).detach()
    second = explain(clf, x, top2[:, 1]).detach()
    sims = map_similarity(first, second)
    return ClassSimilarity(sims["spearman"], sims["ssim"], sims["cosine"], top2)


def object_share(maps: torch.Tensor, target_masks: torch.Tensor,
                 other_masks: torch.Tensor) -> torch.Tensor:
    """Share of the positive relevance on the explained object's mask, out of the relevance
    on both objects' masks, per image ``[N]``; NaN if either mask is empty or neither
    object gets positive relevance. Pixels in both masks count for both."""
    check_masks(maps, target_masks, "target_masks")
    check_masks(maps, other_masks, "other_masks")
    pos = maps.double().clamp_min(0).flatten(1)
    on_t = (pos * target_masks.flatten(1)).sum(dim=1)
    on_o = (pos * other_masks.flatten(1)).sum(dim=1)
    both = on_t + on_o
    out = (on_t / both).masked_fill(both == 0, float("nan"))
    return empty_to_nan(empty_to_nan(out, target_masks), other_masks)


def relevance_contrast(maps: torch.Tensor, target_masks: torch.Tensor,
                       other_masks: torch.Tensor) -> torch.Tensor:
    """``RMA(map, S_c) - RMA(map, S_c')`` per image ``[N]`` (spec §9.9)."""
    return (relevance_mass_accuracy(maps, target_masks)
            - relevance_mass_accuracy(maps, other_masks))
