"""MACE unit: the property tests of spec methods.md §8.8 (float64, tiny shapes), and what
the output generator reconstructs on the different kinds of heads."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import mindlens
from mindlens.methods.mace import MaceUnit, UnitConfig, attach, triplet_loss
from mindlens.methods.mace.attach import head_logits
from mindlens.methods.mace.data import ImageSet, cache_features
from mindlens.methods.mace.unit import NO_NEGATIVE

CFG = UnitConfig(channels=6, height=3, width=4, classes=3, concepts=4, embed=5, out_dim=7,
                 hidden=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def unit64() -> MaceUnit:
    torch.manual_seed(0)
    return MaceUnit(CFG).double()


def features(b: int = 5) -> torch.Tensor:
    return torch.randn(b, CFG.channels, CFG.height, CFG.width, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(1))


def test_shapes(unit64: MaceUnit) -> None:
    out = unit64(features(5))
    k, p, e = CFG.classes, CFG.concepts, CFG.embed
    assert out.maps.shape == (5, k, p, CFG.height, CFG.width)
    assert out.embeddings.shape == (5, k, p, e)
    assert out.rho.shape == (5, k, p)
    assert out.relevance.shape == out.relevance_logit.shape == (5, k)
    assert out.z_hat.shape == (5, CFG.out_dim)
    assert (out.maps >= 0).all()


def test_map_channels_are_class_major(unit64: MaceUnit) -> None:
    f = features(2)
    out = unit64(f)
    conv = torch.relu(unit64.map_generator(f))
    c, q = 2, 1
    torch.testing.assert_close(out.maps[:, c, q], conv[:, c * CFG.concepts + q])


def test_unit_norm_embeddings_and_relevance_range(unit64: MaceUnit) -> None:
    out = unit64(features(6) * 10)
    norms = out.embeddings.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-12, rtol=0)
    assert ((out.relevance > 0) & (out.relevance < 1)).all()


def test_relevance_logit_decomposes_into_concept_terms(unit64: MaceUnit) -> None:
    out = unit64(features(4))
    total = out.rho.sum(dim=2) + unit64.relevance_bias
    torch.testing.assert_close(out.relevance_logit, total, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.logit(out.relevance), total, atol=1e-9, rtol=0)
    # rho is the inner product of the embedding with the class weight slice
    c, q = 1, 3
    u = unit64.relevance_weight[c, q * CFG.embed:(q + 1) * CFG.embed]
    torch.testing.assert_close(out.rho[:, c, q], out.embeddings[:, c, q] @ u)


def test_pruned_concept_has_no_influence(unit64: MaceUnit) -> None:
    maps = unit64.concept_maps(features(3))
    keep = torch.ones(CFG.classes, CFG.concepts)
    keep[1, 2] = 0
    unit64.prune(keep)
    before = unit64.from_maps(maps)
    bumped = maps.clone()
    bumped[:, 1, 2] += torch.rand_like(bumped[:, 1, 2]) * 5
    after = unit64.from_maps(bumped)
    assert torch.equal(before.relevance, after.relevance)
    assert torch.equal(before.z_hat, after.z_hat)
    assert (after.rho[:, 1, 2] == 0).all()
    # a concept that is kept does move the outputs (the test above can fail)
    bumped[:, 1, 1] += 3.0
    moved = unit64.from_maps(bumped)
    assert not torch.allclose(before.relevance[:, 1], moved.relevance[:, 1])
    assert not torch.allclose(before.z_hat, moved.z_hat)


def naive_triplet(emb: torch.Tensor, margin: float) -> float:
    b, p, _ = emb.shape
    total = 0.0
    for i, q in itertools.product(range(b), range(p)):
        pos = sum(float(((emb[i, q] - emb[j, q]) ** 2).sum()) for j in range(b)) / b
        cands = [float(((emb[i, q] - emb[i, r]) ** 2).sum()) for r in range(p)]
        above = [d for d in cands if d > pos]
        neg = min(above) if above else NO_NEGATIVE
        total += max(pos - neg + margin, 0.0)
    return total / (b * p)


@pytest.mark.parametrize("margin", [1.0, 0.2, 3.0])
def test_triplet_loss_equals_naive_loop(margin: float) -> None:
    g = torch.Generator().manual_seed(3)
    emb = nn.functional.normalize(torch.randn(3, 4, 5, generator=g, dtype=torch.float64),
                                  dim=-1)
    got = float(triplet_loss(emb, margin))
    assert got == pytest.approx(naive_triplet(emb, margin), abs=1e-12)
    assert got > 0


def test_triplet_loss_collapse_and_margin() -> None:
    same = torch.zeros(3, 4, 5, dtype=torch.float64)
    same[..., 0] = 1.0
    assert float(triplet_loss(same, 1.0)) == 0.0  # collapse is not penalised (spec note)
    # concepts far apart and stable across images: loss 0 once neg - pos exceeds the margin
    eye = torch.eye(4, 5, dtype=torch.float64).expand(3, 4, 5)
    assert float(triplet_loss(eye, 1.0)) == 0.0  # pos 0, neg 2
    assert float(triplet_loss(eye, 2.5)) == pytest.approx(0.5)


# -- what the output generator reconstructs ---------------------------------------------------
class Scaled(nn.Module):
    """A head with an operation after its last linear layer."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x)) * 3


def test_gap_head_reconstructs_pooled_features(resnet20: mindlens.Classifier) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    att = attach(resnet20, x)
    assert att.head == "linear"
    cache = cache_features(resnet20, ImageSet(x, resnet20), att)
    torch.testing.assert_close(cache.z, cache.F.mean(dim=(2, 3)))
    with torch.no_grad():
        logits = resnet20(x)
    torch.testing.assert_close(head_logits(resnet20, att.head_module(resnet20), cache.z),
                               logits, atol=1e-5, rtol=1e-5)


def test_dense_head_and_logits_fallback(lenet: mindlens.Classifier) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    att = attach(lenet, x)
    last = att.head_module(lenet)
    assert isinstance(last, nn.Linear) and last.out_features == 10
    cache = cache_features(lenet, ImageSet(x, lenet), att)
    assert cache.z.shape == (2, last.in_features)
    wrapped = mindlens.Classifier(Scaled(lenet.module), (32, 32), 3)
    att2 = attach(wrapped, x)
    assert att2.head is None  # tanh after the last layer: the unit rebuilds the logits
    cache2 = cache_features(wrapped, ImageSet(x, wrapped), att2)
    torch.testing.assert_close(cache2.z, wrapped(x).detach())
