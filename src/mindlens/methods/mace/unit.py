"""The MACE unit (Kumar et al. 2020, "MACE: Model Agnostic Concept Extractor for
Explaining Image Classification Networks", arXiv:2011.01472), in PyTorch.

Four modules sit on the last spatial feature map ``F`` ``[B, D, H, W]`` of a frozen CNN
(spec ``methods.md`` §8.2; shapes for ``K`` classes, ``P`` concepts per class, embedding
size ``E``):

1. map generator: a 1x1 convolution ``D -> K*P`` with ReLU, channels class-major
   (channel ``c*P + q`` is concept ``q`` of class ``c``) -> concept maps ``M [B, K, P, H, W]``;
2. embedding generator: one MLP per class, shared by its ``P`` maps:
   ``H*W -> 128 -> 64 -> E`` (ReLU, ReLU, tanh) then L2 normalisation -> ``e [B, K, P, E]``;
3. relevance estimator: per class one linear unit on the concatenated ``P*E`` embedding
   values, then a sigmoid -> ``r [B, K]``. Its logit splits exactly into per-concept terms
   ``rho_{c,q} = <e_{c,q}, u_{c,q}>``: ``logit(r_c) = sum_q rho_{c,q} + bias_c``;
4. output generator: ``r_c * e_{c,q}`` for all classes, concatenated (``K*P*E`` values)
   -> Dense ``hidden`` ReLU -> Dense ``out_dim``: the reconstruction ``z_hat`` of the
   head's representation (see :mod:`.attach` for which one), passed by the caller through
   the frozen last layer of the base model.

An optional pruning mask ``[K, P]`` (1 = keep) zeroes pruned embeddings before the
relevance estimator and the output generator, so a pruned concept has no influence.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: widths of the per-class embedding MLPs before the embedding layer (reference code)
EMBED_HIDDEN = (128, 64)


@dataclass(frozen=True)
class UnitConfig:
    """Shapes of a MACE unit; stored in the unit file."""

    channels: int  # D, channels of the feature map
    height: int  # H
    width: int  # W
    classes: int  # K
    concepts: int = 10  # P, concepts per class
    embed: int = 32  # E
    out_dim: int = 64  # size of the reconstructed head representation
    hidden: int = 256  # output generator width (reference: 1024)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class UnitOutput:
    """Everything one forward pass of the unit computes."""

    maps: torch.Tensor  # [B, K, P, H, W] concept maps (>= 0)
    embeddings: torch.Tensor  # [B, K, P, E] unit vectors (zero where pruned)
    rho: torch.Tensor  # [B, K, P] per-concept relevance contributions
    relevance_logit: torch.Tensor  # [B, K]
    relevance: torch.Tensor  # [B, K] in (0, 1)
    z_hat: torch.Tensor  # [B, out_dim]


class ClassMLPs(nn.Module):
    """``K`` independent dense layers applied at once: ``[B, K, P, n] -> [B, K, P, m]``."""

    def __init__(self, classes: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(classes, n_out))
        bound = 1.0 / n_in**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bkpn,knm->bkpm", x, self.weight) + self.bias[None, :, None]


class MaceUnit(nn.Module):
    """The trainable MACE unit; see the module docstring for the formulas."""

    def __init__(self, config: UnitConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.map_generator = nn.Conv2d(c.channels, c.classes * c.concepts, 1)
        sizes = (c.height * c.width, *EMBED_HIDDEN, c.embed)
        self.embedders = nn.ModuleList(
            ClassMLPs(c.classes, a, b) for a, b in itertools.pairwise(sizes))
        self.relevance_weight = nn.Parameter(torch.empty(c.classes, c.concepts * c.embed))
        self.relevance_bias = nn.Parameter(torch.zeros(c.classes))
        nn.init.uniform_(self.relevance_weight, -(c.concepts * c.embed) ** -0.5,
                         (c.concepts * c.embed) ** -0.5)
        self.output_generator = nn.Sequential(
            nn.Linear(c.classes * c.concepts * c.embed, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, c.out_dim))
        self.register_buffer("keep", torch.ones(c.classes, c.concepts))

    # -- the four modules ----------------------------------------------------------------
    def concept_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Map generator: ``F [B, D, H, W] -> M [B, K, P, H, W]``."""
        c = self.config
        m = F.relu(self.map_generator(features))
        return m.view(m.shape[0], c.classes, c.concepts, *m.shape[2:])

    def embed(self, maps: torch.Tensor) -> torch.Tensor:
        """Embedding generator: ``M -> e [B, K, P, E]``, unit vectors, pruned ones zero."""
        h = maps.flatten(3)
        for i, layer in enumerate(self.embedders):
            h = layer(h)
            h = torch.tanh(h) if i == len(self.embedders) - 1 else F.relu(h)
        e = F.normalize(h, dim=-1, eps=1e-12)
        return e * self.keep[None, :, :, None].to(e.dtype)

    def relevance_terms(self, e: torch.Tensor) -> torch.Tensor:
        """``rho [B, K, P]``: concept q's share of class c's relevance logit."""
        u = self.relevance_weight.view(self.config.classes, self.config.concepts, -1)
        return torch.einsum("bkpe,kpe->bkp", e, u)

    def relevance_logit(self, e: torch.Tensor) -> torch.Tensor:
        """Relevance estimator before the sigmoid: one linear unit per class on the
        concatenated embeddings, ``[B, K]``."""
        flat = e.flatten(2)  # [B, K, P*E], concept-major as in the concatenation
        return torch.einsum("bkn,kn->bk", flat, self.relevance_weight) + self.relevance_bias

    def output(self, e: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Output generator: relevance-scaled embeddings -> ``z_hat [B, out_dim]``."""
        return self.output_generator((e * r[:, :, None, None]).flatten(1))

    def from_maps(self, maps: torch.Tensor) -> UnitOutput:
        e = self.embed(maps)
        logit = self.relevance_logit(e)
        r = torch.sigmoid(logit)
        return UnitOutput(maps, e, self.relevance_terms(e), logit, r, self.output(e, r))

    def forward(self, features: torch.Tensor) -> UnitOutput:  # type: ignore[override]
        return self.from_maps(self.concept_maps(features))

    def prune(self, keep: torch.Tensor) -> None:
        """Set the pruning mask ``[K, P]`` (True/1 = keep the concept)."""
        if keep.shape != self.keep.shape:
            raise ValueError(f"pruning mask must be {tuple(self.keep.shape)}, got "
                             f"{tuple(keep.shape)}")
        self.keep.copy_(keep.to(self.keep.dtype))


# -- losses (spec §8.3) ----------------------------------------------------------------------
NO_NEGATIVE = 4.0 + 1e-6  # the largest squared distance between unit vectors, plus a hair


def triplet_loss(emb: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Semi-hard triplet loss on one class's embeddings ``[B, P, E]`` (reference code).

    ``pos(b,q)``: mean over the batch of ``|E[b,q] - E[b',q]|^2`` (b' = b included);
    ``neg(b,q)``: the smallest ``|E[b,q] - E[b,q']|^2`` over concepts of the same image
    that exceeds ``pos(b,q)``, else 4 (+1e-6). Loss: mean of ``max(pos - neg + margin, 0)``.
    """
    across = (emb[:, None] - emb[None, :]).pow(2).sum(-1)  # [B, B', P]
    pos = across.mean(dim=1)  # [B, P]
    within = (emb[:, :, None] - emb[:, None, :]).pow(2).sum(-1)  # [B, P, P']
    big = torch.full_like(within, NO_NEGATIVE)
    neg = torch.where(within > pos[:, :, None], within, big).amin(dim=2)
    return (pos - neg + margin).clamp_min(0).mean()


def bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras-style binary cross-entropy with soft targets (predictions clipped to 1e-7)."""
    return F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), target)


@dataclass
class Losses:
    total: torch.Tensor
    mse: torch.Tensor
    fid: torch.Tensor
    rel: torch.Tensor
    trip: torch.Tensor

    def items(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "mse", "fid", "rel", "trip")}


def mace_losses(out: UnitOutput, z: torch.Tensor, p: torch.Tensor, p_hat: torch.Tensor,
                margin: float = 1.0, triplet_weight: float = 0.1) -> Losses:
    """``L = MSE(z_hat, z) + BCE(p_hat; p) + BCE(r; p) + 0.1 * sum_c L_trip,c`` (§8.3)."""
    mse = F.mse_loss(out.z_hat, z)
    fid = bce(p_hat, p)
    rel = bce(out.relevance, p)
    trip = sum((triplet_loss(out.embeddings[:, c], margin)
                for c in range(out.embeddings.shape[1])), torch.zeros((), dtype=z.dtype))
    total = mse + fid + rel + triplet_weight * trip
    return Losses(total, mse, fid, rel, trip)
