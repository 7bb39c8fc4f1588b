"""Leave no trace, for input_x_gradient, integrated_gradients, smoothgrad and rise: the
same checks as test_hygiene.py (state dict, modules, train/eval mode, requires_grad,
inplace flags, hooks, .grad, grad mode), with small settings so that they stay fast."""

from __future__ import annotations

import warnings

import pytest
import torch

import mindlens

from ..conftest import fingerprint
from .test_hygiene import assert_clean, train_mode_model

SETTINGS = {
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 6, "internal_batch_size": 5, "delta_tolerance": 1e9},
    "smoothgrad": {"n": 3, "batch_size": 2},
    "smoothgrad_ig": {"n": 2, "base": "integrated_gradients",
                      "base_params": {"n_steps": 3, "delta_tolerance": 1e9}},
    "rise": {"n_masks": 40, "s": 3, "batch_size": 20},
}


def _explain(clf: mindlens.Classifier, x: torch.Tensor, key: str, **kw):
    name = "smoothgrad" if key.startswith("smoothgrad") else key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mindlens.explain(clf, x, name, **SETTINGS[key], **kw)


@pytest.mark.parametrize("dense_head", [False, True])
@pytest.mark.parametrize("key", list(SETTINGS))
def test_model_untouched_and_explained_in_eval_mode(key: str, dense_head: bool) -> None:
    net = train_mode_model(dense_head)
    clf = mindlens.Classifier(net, (8, 8))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        net.eval()
        reference = net(x)
        net.train()
    before = fingerprint(net)
    e = _explain(clf, x, key, top_k=2)
    assert_clean(before, net)
    torch.testing.assert_close(e.scores, reference.gather(1, e.targets), rtol=1e-5, atol=1e-6)
    assert not e.maps.requires_grad


@pytest.mark.parametrize("key", list(SETTINGS))
def test_model_untouched_when_forward_raises_and_on_bad_target(key: str) -> None:
    for fail_at in (1, 2, 3):
        net = train_mode_model()
        net.fail_at = fail_at
        clf = mindlens.Classifier(net, (8, 8))
        before = fingerprint(net)
        raised = True
        try:
            _explain(clf, torch.randn(2, 3, 8, 8), key, top_k=2)
            raised = False
        except RuntimeError as err:
            assert "boom" in str(err)
        assert raised or net.calls < fail_at  # it raised whenever the forward ran
        assert_clean(before, net)
    net = train_mode_model()
    clf = mindlens.Classifier(net, (8, 8))
    before = fingerprint(net)
    with pytest.raises(mindlens.InputError, match="out of range"):
        _explain(clf, torch.randn(2, 3, 8, 8), key, target=7)
    assert_clean(before, net)
    with torch.no_grad():  # methods that need gradients get them, and restore the mode
        _explain(clf, torch.randn(2, 3, 8, 8), key)
    assert_clean(before, net)


@pytest.mark.parametrize("key", list(SETTINGS))
def test_asset_model_in_train_mode_untouched(key: str) -> None:
    from ..conftest import load_asset
    clf = load_asset("cifar10_resnet20")  # its own copy: this test flips train/eval
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    clf.module.train()
    before = fingerprint(clf.module)
    _explain(clf, x, key)
    assert_clean(before, clf.module)
