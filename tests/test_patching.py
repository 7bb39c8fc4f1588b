"""ModelPatch puts back whatever it changed: attributes, parameters, buffers, modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mindlens.patching import ModelPatch, has_hooks

from .conftest import assert_untouched, fingerprint


def test_parameters_and_buffers_are_restored_not_deleted() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    conv, bn = net[0], net[1]
    weight, mean = conv.weight, bn.running_mean
    before = fingerprint(net)
    with pytest.raises(RuntimeError), ModelPatch(net) as patch:
        patch.set_attribute(conv, "weight", nn.Parameter(torch.zeros_like(weight)))
        patch.set_attribute(bn, "running_mean", torch.ones(2))
        patch.set_attribute(conv, "bias", None)
        assert float(conv.weight.detach().abs().sum()) == 0 and conv.bias is None
        raise RuntimeError("half-way")
    assert conv.weight is weight and bn.running_mean is mean
    assert "running_mean" in bn.state_dict() and "weight" in conv.state_dict()
    assert_untouched(before, net)


def test_hooks_removed_and_modes_restored() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    net.train()
    net[0].weight.requires_grad_(False)
    with ModelPatch(net) as patch:
        patch.forward_hook(net[0], lambda m, i, o: o)
        patch.forward_pre_hook(net[1], lambda m, i: None)
        patch.set_requires_grad(True)
        assert has_hooks(net) and not net.training and net[0].weight.requires_grad
    assert not has_hooks(net) and net.training and net[1].training
    assert not net[0].weight.requires_grad and net[0].bias.requires_grad
