"""``lrp`` with ``epsilon_plus_flat`` against Zennit's EpsilonPlusFlat on the real models.

How Zennit is made equivalent (it only sees modules, and only canonizes torchvision's
own blocks):
- residual blocks: an ``AttributeCanonizer`` swaps each block's ``forward`` for one that
  adds the branches through ``zennit.layer.Sum`` (``torch.stack`` then sum, rule ``Norm``),
  as /work/shared/bench/peers.py does; mindlens finds the functional ``+`` by itself;
- global average pooling: the root ``forward`` is swapped for one that pools with an
  ``nn.AdaptiveAvgPool2d`` module (Zennit's ``Norm``); mindlens sees the functional
  ``F.adaptive_avg_pool2d`` and gives it the same norm rule;
- BatchNorm (ResNet): ``SequentialMergeBatchNorm``. Zennit leaves the merged BatchNorm
  with its ``eps``, so it is not an exact identity (x / sqrt(1 + eps)); on Zennit's copy
  of the model ``eps`` is moved into ``running_var`` (the same function), so that its
  merged BatchNorm is exactly the identity;
- functional ReLUs: Zennit applies the gradient, mindlens Pass; identical here because
  the layers above give no relevance to inactive units;
- target: Zennit's one-hot output relevance = ``init="one"``.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens

from ..conftest import ASSETS, assert_untouched, asset_images, fingerprint

pytestmark = [pytest.mark.peers, pytest.mark.usefixtures("one_thread")]


def zennit_setup(clf: mindlens.Classifier):
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.layer import Sum

    sys.path.insert(0, str(ASSETS))
    import archs  # type: ignore[import-not-found]

    def resnet_root(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.canonizer_pool(x).flatten(1))

    def mobilenet_root(self, x):
        return self.classifier(self.canonizer_pool(self.features(x))).flatten(1)

    def resnet_block(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.canonizer_sum(torch.stack([out, self.shortcut(x)], dim=-1)))

    def mobilenet_block(self, x):
        y = self.body(x)
        return self.canonizer_sum(torch.stack([x, y], dim=-1)) if self.res else y

    forwards = {archs.CifarResNet: (resnet_root, "canonizer_pool", nn.AdaptiveAvgPool2d, 1),
                archs.MobileNetV2TF: (mobilenet_root, "canonizer_pool", nn.AdaptiveAvgPool2d, 1),
                archs._CifarBlock: (resnet_block, "canonizer_sum", Sum, -1),
                archs._InvRes: (mobilenet_block, "canonizer_sum", Sum, -1)}

    def attribute_map(name, module):
        for kind, (fwd, attr, layer, arg) in forwards.items():
            if type(module) is kind:
                return {"forward": fwd.__get__(module), attr: layer(arg)}
        return None

    model = copy.deepcopy(clf.module)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.data += m.eps
            m.eps = 0.0
    canonizers = [SequentialMergeBatchNorm(), AttributeCanonizer(attribute_map)]
    return model, EpsilonPlusFlat(canonizers=canonizers)


@pytest.mark.parametrize("name", ["cifar10_resnet20", "mobilenet_v2"])
def test_epsilon_plus_flat_equals_zennit(name, request, torchvision_stub):
    from zennit.attribution import Gradient

    clf = request.getfixturevalue("resnet20" if name == "cifar10_resnet20" else name)
    pattern = "foolbox/cifar10_0[0-1]*.png" if "cifar" in name else "foolbox/imagenet_0[0-1]*.jpg"
    x = clf.preprocess(asset_images(pattern)[:2])
    before = fingerprint(clf.module)
    ours = mindlens.explain(clf, x, "lrp", init="one")
    assert_untouched(before, clf.module)
    model, composite = zennit_setup(clf)
    cls = ours.targets[:, 0] + clf.logit_offset
    with Gradient(model, composite) as attributor:
        _, rel = attributor(x, lambda out: torch.zeros_like(out).scatter_(1, cls[:, None], 1.0))
    theirs = rel.sum(1)
    err = (ours.maps[:, 0] - theirs).abs().amax((1, 2)) / theirs.abs().amax((1, 2))
    print(f"{name}: max |mindlens - zennit| / max|zennit| = {err.max().item():.2e}")
    assert theirs.abs().amax((1, 2)).min() > 0
    assert err.max() < 1e-5
