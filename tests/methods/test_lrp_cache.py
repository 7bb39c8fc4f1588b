"""The LRP plan cache (mindlens.methods.lrp.cache): a repeated call skips the tracing
forward, any change to the weights, the module tree or the forward's behaviour gives the
map of an uncached call, the cache never keeps a model alive and leaves it untouched."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens
from mindlens.methods.lrp import cache, clear_cache

from ..conftest import assert_untouched, fingerprint
from .test_lrp import tiny


@pytest.fixture
def traces(monkeypatch):
    """Counts the tracing forwards (from an empty cache)."""
    clear_cache()
    count = {"n": 0}
    real = cache.trace

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "trace", counting)
    return count


def uncached(clf, x, method="lrp", **params):
    clear_cache()
    return mindlens.explain(clf, x, method, **params)


def test_second_call_skips_the_trace_and_gives_the_same_map(traces, resnet20):
    clf = tiny(seed=7)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = fingerprint(clf.module)
    first = uncached(clf, x, "sglrp", top_k=2)
    assert traces["n"] == 1 and first.cost.forward == 2  # the trace and the LRP pass
    for method in ("sglrp", "lrp", "clrp"):  # one trace serves every composite and method
        e = mindlens.explain(clf, x, method, top_k=2)
        assert e.cost.forward == 1
        if method == "sglrp":
            assert torch.equal(e.raw, first.raw)
    mindlens.explain(clf, x[:1], "lrp", composite="epsilon_gamma_box")  # other batch size
    assert traces["n"] == 1
    assert_untouched(before, clf.module)
    for size in (32, 40, 32, 40):  # one trace per input shape
        mindlens.explain(resnet20, torch.randn(1, 3, size, size), "lrp")
    assert traces["n"] == 3


def test_changing_a_weight_in_place_invalidates(traces):
    clf = tiny(seed=8)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    old = mindlens.explain(clf, x, "lrp", target=1)
    for change in (lambda m: m.conv2.weight.mul_(-1.5),     # merged with bn
                   lambda m: m.bn.running_var.mul_(3.0),    # buffer of the merged BN
                   lambda m: m.fc.bias.add_(1.0)):
        with torch.no_grad():
            change(clf.module)
        new = mindlens.explain(clf, x, "lrp", target=1)
        assert not torch.allclose(new.maps, old.maps)
        assert torch.equal(new.raw, uncached(clf, x, target=1).raw)
        old = new
    clf.module.bn.eps = 0.5  # a plain attribute the merged weights depend on
    new = mindlens.explain(clf, x, "lrp", target=1)
    assert not torch.allclose(new.maps, old.maps)
    assert torch.equal(new.raw, uncached(clf, x, target=1).raw)
    clf.module.fc.weight = nn.Parameter(clf.module.fc.weight.detach() * 2)  # new tensor
    new = mindlens.explain(clf, x, "lrp", target=1)
    assert torch.equal(new.raw, uncached(clf, x, target=1).raw)
    assert traces["n"] == 6  # the first call and the five uncached ones


def test_replaced_module_or_changed_forward_retraces(traces):
    clf = tiny(seed=9)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    mindlens.explain(clf, x, "lrp")
    clf.module.conv1 = nn.Conv2d(3, 4, 3, padding=1).double()
    e = mindlens.explain(clf, x, "lrp", target=2)
    assert traces["n"] == 2
    assert torch.equal(e.raw, uncached(clf, x, target=2).raw)

    class Switch(nn.Module):
        """The BatchNorm reads the conv's output only while ``skip`` is off."""

        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 16, 2)
            self.skip = False

        def forward(self, x):
            y = self.conv(x)
            y = self.bn(F.relu(y) if self.skip else y)
            return self.fc(y.flatten(1))

    torch.manual_seed(0)
    model = Switch().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.weight.uniform_(0.5, 2.0)
    sw = mindlens.Classifier(model, (4, 4), 3)
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert mindlens.explain(sw, z, "lrp").extras["merged_batchnorm"] == {"conv": "bn"}
    model.skip = True  # same modules, same weights, different graph: no merge now
    e = mindlens.explain(sw, z, "lrp", target=0)
    assert e.extras["merged_batchnorm"] == {} and e.cost.forward == 3  # pass, trace, pass
    assert torch.equal(e.raw, uncached(sw, z, target=0).raw)

    class Branch(nn.Module):
        """With ``extra`` on, the conv output is also read by a residual sum: no merge."""

        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 16, 2)
            self.extra = False

        def forward(self, x):
            y = self.conv(x)
            z = self.bn(y)
            return self.fc((z + y if self.extra else z).flatten(1))

    torch.manual_seed(1)
    model = Branch().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
    br = mindlens.Classifier(model, (4, 4), 3)
    assert mindlens.explain(br, z, "lrp").extras["merged_batchnorm"] == {"conv": "bn"}
    model.extra = True  # same layer calls, one more sum
    e = mindlens.explain(br, z, "lrp", target=0)
    assert e.extras["merged_batchnorm"] == {} and e.cost.forward == 3
    assert torch.equal(e.raw, uncached(br, z, target=0).raw)


def test_cache_does_not_keep_the_model_alive():
    clf = tiny(seed=10)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    mindlens.explain(clf, x, "lrp", composite="epsilon_gamma_box")
    ref = weakref.ref(clf.module)
    assert ref() in cache._CACHE
    del clf
    gc.collect()
    assert ref() is None


def test_trace_knows_which_inputs_are_nonnegative():
    """Rules skip splitting inputs that are >= 0 by construction; anything that can be
    negative (the image, a hardtanh at its default -1, a negative write) is split."""
    from mindlens.methods.lrp.canonizers import trace

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
            self.d, self.e = nn.Conv2d(4, 4, 1), nn.Linear(4, 2)

        def forward(self, x):
            y = F.pad(F.max_pool2d(F.relu6(self.a(x)), 2), (1, 1, 1, 1))  # >= 0
            z = F.hardtanh(self.b(y))  # [-1, 1]
            w = torch.clamp(self.c(z), min=0.0)
            w[:, :1] = -1.0
            v = F.adaptive_avg_pool2d(torch.sigmoid(self.d(w)), 1).flatten(1)
            return self.e(v)

    clf = mindlens.Classifier(Net(), (4, 4), 3)
    found = trace(clf, torch.randn(1, 3, 4, 4))
    assert found.nonneg == {"b", "e"}
    clf = tiny(seed=11)
    assert trace(clf, torch.randn(1, 3, 8, 8, dtype=torch.float64)).nonneg == {"conv2", "fc"}


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
def test_backward_passes_sharing_denominators_equal_single_passes(composite):
    """Top-k and the contrastive variants run several backward passes over one forward;
    the input-only denominators kept between them give exactly the single-pass maps."""
    clf = tiny(seed=12)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    many = mindlens.explain(clf, x, "lrp", top_k=3, composite=composite)
    for t in range(3):
        one = mindlens.explain(clf, x, "lrp", target=many.targets[:, t], composite=composite)
        assert torch.equal(one.raw[:, 0], many.raw[:, t])
    # CLRP with scaling: R_target - lambda R_dual from two passes; the same from two
    # single-pass LRP runs started at the target and dual vectors
    two = mindlens.explain(clf, x, "clrp", target=1, composite=composite)
    assert two.cost.backward == 2
    logits = clf(x).detach()
    dual = (logits[:, 1:2] / (logits.shape[1] - 1)).expand_as(logits).clone()
    dual[:, 1] = 0
    from mindlens.methods.lrp.core import lrp_graph

    with lrp_graph(clf, x, mindlens.methods.lrp.composites.get(composite)) as g:
        r_dual = g.relevance(dual, retain=False)
    r_t = mindlens.explain(clf, x, "lrp", target=1, composite=composite).raw[:, 0]
    lam = r_t.flatten(1).sum(1) / r_dual.flatten(1).sum(1)
    torch.testing.assert_close(two.raw[:, 0], r_t - lam.view(-1, 1, 1, 1) * r_dual,
                               rtol=1e-12, atol=1e-12)
