"""Does the map depend on the input at all? The data side of the sanity checks of Adebayo,
Gilmer, Muelly, Goodfellow, Hardt, Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018.

The paper's §4 asks that an explanation change when what the model learned from the data
changes. Its most blatant failure needs no retraining to detect: a method whose map for a
class is the same for every image (DeconvNet on a network without max-pool switches, for
instance, where the backward pass never sees the input) explains nothing about the image.
:func:`input_dependence` explains a batch of *different* images for *the same* class and
measures how alike their maps are; :func:`identical_maps` flags a batch of maps that are
equal up to rounding, for reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Classifier
from ._common import check_maps
from .explainers import ExplainFn
from .similarity import spearman

#: two maps closer than this share of their largest magnitude are "the same map"
IDENTICAL_RTOL = 1e-4


@dataclass
class InputDependence:
    """Per image ``[N]``: the median Spearman rank correlation of ``|map|`` with the maps of
    the other images (all explained for ``class_index``; 1.0 where two maps are identical,
    also when both are flat); ``identical``: the share of the other images whose map equals
    this one's. NaN where the batch has a single image."""

    spearman: torch.Tensor
    identical: torch.Tensor
    class_index: int


def same_map(a: torch.Tensor, b: torch.Tensor, rtol: float = IDENTICAL_RTOL) -> torch.Tensor:
    """True per pair where two batches of maps ``[N, ...]`` are equal within ``rtol`` of the
    larger magnitude of the two (two all-zero maps are the same map)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    scale = torch.maximum(a.abs().amax(dim=1), b.abs().amax(dim=1))
    return (a - b).abs().amax(dim=1) <= rtol * scale


def pairwise_similarity(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spearman of ``|map|`` and identity for every ordered pair of a batch ``[N, H, W]``:
    two ``[N, N]`` matrices (diagonal NaN / False). Identical maps count as Spearman 1.0,
    including flat ones (for which the rank correlation itself is undefined)."""
    check_maps(maps)
    n = len(maps)
    rho = torch.full((n, n), float("nan"), dtype=torch.float64)
    same = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n - 1):
        rest = maps[i + 1:]
        first = maps[i].expand_as(rest)
        r = spearman(first.abs(), rest.abs()).cpu()
        s = same_map(first, rest).cpu()
        r = torch.where(s, torch.ones_like(r), r)
        rho[i, i + 1:], rho[i + 1:, i] = r, r
        same[i, i + 1:], same[i + 1:, i] = s, s
    return rho, same


def input_dependence(explain: ExplainFn, clf: Classifier, x: torch.Tensor,
                     class_index: int | None = None,
                     known: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> InputDependence:
    """Explain every image of ``x`` ``[N, C, ...]`` for one class (default: the class
    predicted most often in the batch, the lowest index on a tie) and compare the maps of
    different images. A method that ignores the image scores 1.0 everywhere.
    ``known``: ``(classes [N], maps [N, ...])`` the caller has explained already, for the
    predicted classes (they choose the default class then); the images already explained
    for the class are not explained again."""
    x = clf.check_tensor(x)
    if class_index is None:
        if known is not None:  # the clean predictions the caller explained
            predicted = known[0]
        else:
            with torch.no_grad():
                predicted = clf.predict(x).argmax(dim=1)
        class_index = int(torch.bincount(predicted.cpu()).argmax())
    classes = torch.full((len(x),), class_index, dtype=torch.long, device=x.device)
    if known is None:
        maps = explain(clf, x, classes).detach()
    else:
        have = known[0].cpu() == class_index
        maps = known[1].detach().clone()
        todo = (~have).nonzero().flatten()
        if len(todo):
            maps[todo.to(maps.device)] = explain(clf, x[todo.to(x.device)],
                                                 classes[todo.to(x.device)]).detach().to(
                                                     maps.dtype)
    maps = maps.flatten(2) if maps.dim() > 3 else maps  # volumes: one row per slice stack
    rho, same = pairwise_similarity(maps.reshape(len(x), maps.shape[1], -1))
    if len(x) < 2:
        nan = torch.full((len(x),), float("nan"), dtype=torch.float64)
        return InputDependence(nan, nan.clone(), class_index)
    eye = torch.eye(len(x), dtype=torch.bool)
    others = rho.masked_fill(eye, float("nan"))
    med = others.nanmedian(dim=1).values
    share = same.double().sum(dim=1) / (len(x) - 1)
    return InputDependence(med, share, class_index)


def identical_maps(maps: torch.Tensor, rtol: float = IDENTICAL_RTOL) -> bool:
    """True when a batch of at least two maps ``[N, ...]`` holds the same map N times (within
    ``rtol`` of the largest magnitude): the map then cannot say anything about the image."""
    if len(maps) < 2:
        return False
    first = maps[:1].expand_as(maps)
    return bool(same_map(first, maps, rtol).all())


def input_independence_note(x: torch.Tensor, maps: torch.Tensor,
                            targets: torch.Tensor) -> str:
    """A warning in words when, within one explained batch, different images explained for
    the same class got the same map (``""`` otherwise, or when no two different images share
    a class). ``x`` ``[B, C, ...]``, ``maps`` ``[B, T, ...]``, ``targets`` ``[B, T]``."""
    pairs = 0
    for t in range(maps.shape[1]):
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                if targets[i, t] != targets[j, t] or torch.equal(x[i], x[j]):
                    continue
                if not bool(same_map(maps[i:i + 1, t], maps[j:j + 1, t])):
                    return ""
                pairs += 1
    if not pairs:
        return ""
    return (f"the map is the same for different images ({pairs} pair(s) of images explained "
            f"for the same class got identical maps): on this model this method does not "
            f"look at the image, so its map explains nothing about it")
