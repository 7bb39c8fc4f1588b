"""LRP through modern CNN blocks (spec methods-more.md section 19.9): squeeze-and-excitation
gates, LayerNorm (also channels-first with permute) and GroupNorm, SiLU/GELU/Hardswish/Mish,
layer scale, channels-last Linear and ``mean`` pooling, on EfficientNet-, ConvNeXt- and
MobileNetV3-style models written like their reference code, in float64."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens
from mindlens.errors import InputError, NotApplicableError
from mindlens.methods.lrp import composites, rules
from mindlens.methods.lrp.ops import BATCHNORM, CONV, LINEAR

from .. import modern_nets as mn
from ..conftest import assert_untouched, fingerprint
from ..lrp_twin import twin_forward, twin_relevance

pytestmark = pytest.mark.usefixtures("one_thread")
MODELS = list(mn.BUILDERS)


def lrp0(**kw) -> composites.Composite:
    """LRP-0: LRP-epsilon on every layer, identity on activations, norm rule on sums and
    means. The stabiliser is 1e-30 (not the spec's 1e-12): these random nets have
    pre-activations ~1e-5, where 1e-12 alone would shift the map by 1e-7 of its max."""
    eps = rules.Epsilon(1e-30)
    return composites.Composite("lrp0", ((CONV, eps), (LINEAR, eps), (BATCHNORM, eps)),
                                activations="pass", sum_epsilon=1e-30, **kw)


def batch(clf: mindlens.Classifier, n: int = 2, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(n, 3, *clf.input_size, dtype=torch.float64)


def assert_close_to_max(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-10) -> None:
    for g, r in zip(got, ref, strict=True):
        err = float((g - r).abs().max())
        assert err <= rel * float(r.abs().max()), (err, float(r.abs().max()))


@pytest.mark.parametrize("name", MODELS)
def test_lrp0_equals_gradient_x_input_of_the_detached_twin(name):
    clf = mn.build(name)
    x = batch(clf)
    before = fingerprint(clf.module)
    e = mindlens.explain(clf, x, "lrp", composite=lrp0(), top_k=2)
    assert_untouched(before, clf.module)
    with torch.no_grad():  # the twin explains the same function
        torch.testing.assert_close(twin_forward(clf.module, x), clf.module(x), rtol=0,
                                   atol=1e-12)
    for t in range(2):
        assert_close_to_max(e.maps[:, t], twin_relevance(clf.module, x, e.targets[:, t]))


def test_mean_std_constant_matches_its_twin_and_is_not_conservative():
    clf = mn.build("modern_toy")
    x = batch(clf)
    e = mindlens.explain(clf, x, "lrp", composite=lrp0(), norm_rule="mean_std_constant")
    assert_close_to_max(e.maps[:, 0],
                        twin_relevance(clf.module, x, e.targets[:, 0], detach_mean=True))
    free = mindlens.Classifier(mn.zero_biases(mn.build("modern_toy").module), (12, 12), 3)
    std = mindlens.explain(free, x, "lrp", composite=lrp0())
    both = mindlens.explain(free, x, "lrp", composite=lrp0(), norm_rule="mean_std_constant")
    z = std.scores[:, 0]
    torch.testing.assert_close(std.extras["relevance_sum"][:, 0], z, rtol=1e-8, atol=0)
    assert ((both.extras["relevance_sum"][:, 0] - z).abs() > 1e-3 * z.abs()).all()


@pytest.mark.parametrize("name", MODELS)
def test_conservation_on_bias_free_models(name):
    """Without biases (BatchNorm means and norm shifts 0) only the stabilisers absorb
    relevance. The LRP-epsilon composite with a tiny epsilon conserves exactly; at the
    default 1e-6 the loss is the epsilon term (these random nets have logits ~1e-4, so it is
    visible); the default composite (z+, flat) also drops the relevance of neurons that have
    no positive contribution (z+ has nothing to split it by), a few percent here."""
    clf = mn.build(name)
    mn.zero_biases(clf.module)
    x = batch(clf)
    ones = torch.ones(2, dtype=x.dtype)
    tiny = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-12)
    torch.testing.assert_close(tiny.extras["conservation"][:, 0], ones, rtol=0, atol=1e-7)
    eps = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-6)
    bound = 100 * 1e-6 / tiny.scores[:, 0].abs()  # epsilon's share at the head, x 100
    assert ((eps.extras["conservation"][:, 0] - 1).abs() <= bound).all()
    default = mindlens.explain(clf, x, "lrp")
    assert ((default.extras["conservation"][:, 0] - 1).abs() < 0.05).all()


def test_uniform_gate_rule_splits_and_conserves():
    clf = mindlens.Classifier(mn.zero_biases(mn.build("modern_toy").module), (12, 12), 3)
    x = batch(clf)
    const = mindlens.explain(clf, x, "lrp", composite=lrp0())
    half = mindlens.explain(clf, x, "lrp", composite=lrp0(), gate_rule="uniform")
    assert half.extras["functional_ops"]["gate"] == 1
    torch.testing.assert_close(half.extras["relevance_sum"][:, 0], half.scores[:, 0],
                               rtol=1e-8, atol=0)
    assert not torch.allclose(half.maps, const.maps, rtol=1e-3)
    with pytest.raises(InputError, match="gate_rule"):
        mindlens.explain(clf, x, "lrp", gate_rule="half")


def test_each_canonizer_is_necessary():
    """Plain autograd through a mean, a gate, a layer scale or a LayerNorm is not LRP-0:
    the twin differs from the naive gradient x input of each block alone."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    blocks = {
        "gate": lambda y: y * torch.sigmoid(y.mean((2, 3), keepdim=True)),
        "layer_scale": lambda y: torch.full((4, 1, 1), 1e-3, dtype=y.dtype) * y + y.relu(),
        "layer_norm": lambda y: F.layer_norm(y.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2),
        "gelu": F.gelu,
    }
    for key, block in blocks.items():
        class Mini(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.fc = conv, nn.Linear(4, 3).double()

            def forward(self, x, block=block):
                return self.fc(block(self.conv(x)).mean((2, 3)))

        clf = mindlens.Classifier(Mini(), (6, 6), 3)
        x = batch(clf)
        e = mindlens.explain(clf, x, "lrp", composite=lrp0())
        twin = twin_relevance(clf.module, x, e.targets[:, 0])
        assert_close_to_max(e.maps[:, 0], twin)
        naive = mindlens.explain(clf, x, "saliency", times_input=True, reduction="sum",
                                 target=e.targets[:, 0])
        if key != "layer_scale":  # a constant scale: gradient x input already is LRP-0
            assert not torch.allclose(naive.maps[:, 0], twin, rtol=1e-4), key


def test_unsupported_products_and_hand_written_norms_are_refused():
    class Bilinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.a(x) * self.b(x)

    class HandNorm(nn.Module):  # timm LayerNormExp2d's _layer_norm_cf
        def forward(self, x):
            var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
            return (x - mean) * torch.rsqrt(var + 1e-6)

    for block, pattern in ((Bilinear(), r"'mul'.*module '0'.*gate"),
                           (HandNorm(), r"'var_mean'.*module '0'")):
        model = nn.Sequential(block, nn.Conv2d(3, 3, 1), nn.Flatten(), nn.Linear(48, 2))
        clf = mindlens.Classifier(model, (4, 4), 3)
        before = fingerprint(model)
        with pytest.raises(NotApplicableError, match=pattern):
            mindlens.explain(clf, torch.randn(1, 3, 4, 4), "lrp")
        assert_untouched(before, model)


@pytest.mark.parametrize("rule", [rules.Epsilon(1e-6), rules.Gamma(0.25), rules.ZPlus()])
def test_channels_last_linear_equals_a_1x1_convolution(rule):
    torch.manual_seed(0)
    lin = nn.Linear(4, 6).double()
    conv = nn.Conv2d(4, 6, 1).double()
    with torch.no_grad():
        conv.weight.copy_(lin.weight[:, :, None, None])
        conv.bias.copy_(lin.bias)
    pre = nn.Conv2d(3, 4, 3, padding=1).double()
    head = nn.Linear(6, 3).double()

    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre, self.pw, self.head = pre, lin, head

        def forward(self, x):
            y = self.pw(self.pre(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.head(y.relu().mean((2, 3)))

    class ChannelsFirst(ChannelsLast):
        def __init__(self):
            super().__init__()
            self.pw = conv

        def forward(self, x):
            return self.head(self.pw(self.pre(x)).relu().mean((2, 3)))

    comp = composites.Composite("t", ((CONV, rule), (LINEAR, rules.Epsilon(1e-6))))
    x = batch(mindlens.Classifier(ChannelsLast(), (5, 5), 3))
    a = mindlens.explain(mindlens.Classifier(ChannelsLast(), (5, 5), 3), x, "lrp",
                         composite=comp)
    b = mindlens.explain(mindlens.Classifier(ChannelsFirst(), (5, 5), 3), x, "lrp",
                         composite=comp)
    assert a.extras["rules"]["pw"] == type(rule).__name__  # the conv rule, not the dense one
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-10, atol=1e-12)


def test_layernorm2d_with_permute_equals_channels_last_layernorm():
    torch.manual_seed(0)
    ln2d = mn.LayerNorm2d(4).double()
    ln = nn.LayerNorm(4).double()
    with torch.no_grad():
        for p in (ln2d.weight, ln2d.bias):
            p.uniform_(0.5, 1.5)
        ln.load_state_dict(ln2d.state_dict())
    pre, head = nn.Conv2d(3, 4, 3, padding=1).double(), nn.Linear(4, 3).double()
    first = nn.Sequential(pre, ln2d, nn.Flatten(2), mn.Permute([0, 2, 1]))
    last = nn.Sequential(pre, mn.Permute([0, 2, 3, 1]), ln, nn.Flatten(1, 2))
    x = batch(mindlens.Classifier(nn.Identity(), (5, 5), 3))
    maps = [mindlens.explain(mindlens.Classifier(nn.Sequential(body, Pool(), head), (5, 5), 3),
                             x, "lrp").maps for body in (first, last)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-10, atol=1e-12)


class Pool(nn.Module):
    def forward(self, x):
        return x.mean(1)


class _Fails(rules.Epsilon):
    def relevance(self, op, x, r, saved):
        raise RuntimeError("rule failed")


def test_model_untouched_after_an_error_half_way():
    clf = mn.build("convnext")
    before = fingerprint(clf.module)
    with pytest.raises(RuntimeError, match="rule failed"):
        mindlens.explain(clf, batch(clf), "lrp", composite={"features.1.block.3": _Fails()})
    assert_untouched(before, clf.module)


@pytest.mark.parametrize("name", ["efficientnet", "convnext", "mobilenetv3"])
def test_relevance_is_conserved_at_every_block_boundary(name):
    """Bias-free, LRP-0: the relevance flowing through each stage output sums to z_c."""
    clf = mn.build(name)
    mn.zero_biases(clf.module)
    x = batch(clf)
    seen: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(module, inputs, out):
            if out.requires_grad:
                out.register_hook(lambda g: seen.__setitem__(i, g.detach().flatten(1).sum(1)))
        return hook

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(clf.module.features)]
    try:
        e = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-12)
    finally:
        for h in handles:
            h.remove()
    assert sorted(seen) == list(range(len(clf.module.features)))
    for i, total in seen.items():
        torch.testing.assert_close(total, e.scores[:, 0], rtol=1e-7, atol=0, msg=f"stage {i}")


def test_in_place_gate_product_gives_the_same_map():
    class SE(nn.Module):
        def __init__(self, inplace: bool):
            super().__init__()
            self.inplace = inplace
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            y = self.conv(x)
            s = torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))
            y = y.mul_(s) if self.inplace else y * s
            return self.head(y.mean((2, 3)))

    torch.manual_seed(0)
    a = SE(False).double()
    b = copy.deepcopy(a)
    b.inplace = True
    x = batch(mindlens.Classifier(a, (6, 6), 3))
    maps = [mindlens.explain(mindlens.Classifier(m, (6, 6), 3), x, "lrp", target=0).maps
            for m in (a, b)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-12, atol=1e-15)
    with pytest.raises(NotApplicableError, match=r"in-place gate product.*uniform"):
        mindlens.explain(mindlens.Classifier(b, (6, 6), 3), x, "lrp", gate_rule="uniform")
