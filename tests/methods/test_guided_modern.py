"""Guided Backprop and DeconvNet on modern CNNs (SiLU, GELU, Hardswish): the
``other_activations`` policy -- warn and keep the gradient (default), treat as a ReLU gate,
or refuse -- on the EfficientNet-, ConvNeXt- and MobileNetV3-style test models."""

from __future__ import annotations

import warnings

import pytest
import torch

import mindlens

from .. import modern_nets as mn
from ..conftest import assert_untouched, fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")
OTHERS = {"efficientnet": {"silu"}, "convnext": {"gelu"}, "mobilenetv3": {"hardswish"}}


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
@pytest.mark.parametrize("name", list(OTHERS))
def test_policy_on_modern_activations(name, method):
    clf = mn.build(name)
    torch.manual_seed(0)
    x = torch.randn(2, 3, *clf.input_size, dtype=torch.float64)
    before = fingerprint(clf.module)
    with pytest.warns(UserWarning, match="other_activations='gate'") as caught:
        plain = mindlens.explain(clf, x, method, reduction="sum")
    assert all(n in str(caught[0].message) for n in OTHERS[name])
    assert set(plain.extras["other_activations"]) == OTHERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit policy is silent
        gated = mindlens.explain(clf, x, method, reduction="sum", other_activations="gate")
    assert set(gated.extras["other_activations"]) == OTHERS[name]
    assert not torch.allclose(gated.maps, plain.maps)
    with pytest.raises(mindlens.NotApplicableError, match=next(iter(OTHERS[name]))):
        mindlens.explain(clf, x, method, other_activations="error")
    assert_untouched(before, clf.module)
