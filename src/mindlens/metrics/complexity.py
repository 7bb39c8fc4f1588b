"""How concentrated a map is: sparseness (Gini index) and complexity (entropy)."""

from __future__ import annotations

import torch

from ._common import check_maps


def sparseness(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Gini index of ``|map|`` per image ``[N]`` (Chalasani et al., "Concise Explanations of
    Neural Networks using Adversarial Training", ICML 2020), in [0, 1], higher = sparser.

    ``G = Σ_i (2i - n - 1) a_(i) / (n Σ_i a_(i))`` with ``a`` sorted ascending. ``eps`` is
    added to every value first (as Quantus does) so that an all-zero map gives 0, not NaN.
    """
    check_maps(maps)
    a = maps.abs().flatten(1).double() + eps
    a = a.sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    return ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))


def complexity(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Entropy of the fractional contributions ``P_i = |a_i| / Σ_j |a_j|`` per image
    (Bhatt, Weller, Moura, "Evaluating and Aggregating Feature-based Model Explanations",
    IJCAI 2020), in nats; lower = simpler. ``H = -Σ_i P_i log(P_i + eps)``; an all-zero
    map gives NaN.
    """
    check_maps(maps)
    a = maps.abs().flatten(1).double()
    p = a / a.sum(dim=1, keepdim=True)
    return -(p * torch.log(p + eps)).sum(dim=1)
