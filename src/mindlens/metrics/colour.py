"""Can a method reveal a colour shortcut? A per-channel relevance statistic (spec §10).

The controlled benchmark of the spec: two models trained on the same scenes, one where the
label is also given away by a colour cue and one without (the bundled pair of
:mod:`mindlens.demo.colour`). Each image's explanation is reduced to its *net colour
share*: with ``n_c`` the signed relevance summed over the image in channel ``c``, the
share of the net evidence that is a difference between channels rather than common to all
of them, ``Σ_c |n_c - mean(n)| / (Σ_c |n_c - mean(n)| + |Σ_c n_c|)`` (0 = the channels
agree, as for a change of brightness; 1 = pure colour difference). The score is the AUROC
of "the colour-cue model's share is higher than the control's" over the images (0.5 =
chance, 1 = every image tells). Per-channel shares of ``|relevance|`` alone do not work:
they tell any two models apart, with or without a colour cue. Purely spatial maps (CAM
family, occlusion) have no channel axis, so they cannot show a colour shortcut by
construction: :func:`net_colour_share` returns None; a rule that spreads relevance evenly
over the channels (LRP's flat rule in the first layer) gives 0 for every model.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def channel_shares(raw: torch.Tensor | None) -> torch.Tensor | None:
    """Share of ``|relevance|`` per input channel, ``[N, C]`` (rows sum to 1), from the
    input-shaped attributions ``raw`` ``[N, C, H, W]`` of one target; None when the method
    gives no per-channel relevance (``raw`` None or a single channel)."""
    if raw is None or raw.dim() != 4 or raw.shape[1] < 2:
        return None
    mass = raw.detach().abs().flatten(2).sum(dim=2).double()
    return mass / mass.sum(dim=1, keepdim=True).clamp_min(1e-30)


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores ``positive`` vs ``negative`` (Mann-Whitney U with
    ties counted one half): the probability that a random positive scores higher."""
    p, n = positive.double().flatten(), negative.double().flatten()
    if p.numel() == 0 or n.numel() == 0:
        raise InputError("the AUROC needs at least one positive and one negative score")
    greater = (p[:, None] > n[None, :]).double().sum()
    ties = (p[:, None] == n[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (p.numel() * n.numel()))


def net_colour_share(raw: torch.Tensor | None) -> torch.Tensor | None:
    """Net colour share per image ``[N]`` in [0, 1] (see the module docstring) from the
    input-shaped attributions ``raw`` ``[N, C, H, W]`` of one target; None when the method
    gives no per-channel relevance."""
    if raw is None or raw.dim() != 4 or raw.shape[1] < 2:
        return None
    net = raw.detach().double().flatten(2).sum(dim=2)  # [N, C]
    chroma = (net - net.mean(dim=1, keepdim=True)).abs().sum(dim=1)
    common = net.sum(dim=1).abs()
    return chroma / (chroma + common).clamp_min(1e-30)
