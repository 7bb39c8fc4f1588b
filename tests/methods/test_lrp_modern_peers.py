"""LRP on SiLU/GELU/Hardswish networks against Zennit 1.0 (spec methods-more.md section
19.10): on the subset Zennit supports natively -- Conv2d, Linear, the activations as
``Pass``, ``AdaptiveAvgPool2d`` as ``Norm``, BatchNorm merged -- both give the same map."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mindlens
from mindlens.methods.lrp import composites, rules
from mindlens.methods.lrp.ops import BATCHNORM, CONV, LINEAR

from ..conftest import assert_untouched, fingerprint

pytestmark = [pytest.mark.peers, pytest.mark.usefixtures("one_thread")]


def subset_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.GELU(),
        nn.Conv2d(8, 12, 1), nn.BatchNorm2d(12), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
    ).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                # Zennit keeps eps in the merged BatchNorm (x / sqrt(1 + eps)): move it into
                # running_var, the same function, so that its merged layer is the identity
                m.running_var += m.eps
                m.eps = 0.0
    return model


def test_silu_gelu_hardswish_net_equals_zennit(torchvision_stub):
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool, Convolution
    from zennit.types import Linear as ZLinear

    model = subset_net()
    clf = mindlens.Classifier(model, (10, 10), 3)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    eps = rules.Epsilon(1e-12)
    ours_comp = composites.Composite("z", ((CONV, eps), (LINEAR, eps), (BATCHNORM, eps)),
                                     activations="pass", sum_epsilon=1e-12)
    before = fingerprint(model)
    ours = mindlens.explain(clf, x, "lrp", composite=ours_comp, init="one")
    assert_untouched(before, model)
    assert ours.extras["merged_batchnorm"] == {"0": "1", "5": "6"}

    theirs_comp = LayerMapComposite(
        [(Activation, Pass()), (AvgPool, Norm(stabilizer=1e-12)),
         (Convolution, Epsilon(1e-12)), (ZLinear, Epsilon(1e-12))],
        canonizers=[SequentialMergeBatchNorm()])
    cls = ours.targets[:, 0]
    with Gradient(copy.deepcopy(model), theirs_comp) as attributor:
        _, rel = attributor(x, lambda out: torch.zeros_like(out).scatter_(1, cls[:, None], 1.0))
    theirs = rel.sum(1)
    assert theirs.abs().amax() > 0
    torch.testing.assert_close(ours.maps[:, 0], theirs, rtol=1e-10, atol=1e-12)
