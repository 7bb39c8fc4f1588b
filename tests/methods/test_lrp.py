"""LRP, SGLRP and CLRP: properties from spec sections 5.8 and 6.5 on tiny float64 models,
and the same properties on the real asset models through the public API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens
from mindlens.errors import InputError, NotApplicableError
from mindlens.methods.lrp import composites, rules, sglrp_init

from ..conftest import assert_untouched, asset_images, fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(nn.Module):
    """Conv (bias) -> functional ReLU -> max pool -> conv -> BN -> residual ``+=`` ->
    avg pool module -> linear; optionally bias-free."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 2 * 2, 5, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = self.bn(self.conv2(x))
        y += x
        return self.fc(self.pool(torch.relu(y)).flatten(1))


def tiny(bias: bool = True, seed: int = 0) -> mindlens.Classifier:
    torch.manual_seed(seed)
    model = Tiny(bias).double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.1, 0.1) if bias else model.bn.bias.zero_()
        model.bn.running_mean.zero_() if not bias else None
    return mindlens.Classifier(model, (8, 8), 3)


def grad_x_input(clf: mindlens.Classifier, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    out = clf(xg).gather(1, cls[:, None]).sum()
    return (torch.autograd.grad(out, xg)[0] * x).sum(1)


def test_lrp0_equals_gradient_times_input_float64():
    clf = tiny()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    e = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-12, top_k=2)
    assert e.extras["merged_batchnorm"] == {"conv2": "bn"}
    for t in range(2):
        ref = grad_x_input(clf, x, e.targets[:, t])
        torch.testing.assert_close(e.maps[:, t], ref, rtol=1e-6, atol=1e-9)
    # init="one" divides by the logit
    one = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-12, init="one")
    torch.testing.assert_close(one.maps[:, 0] * e.scores[:, 0, None, None], e.maps[:, 0])


def test_zplus_conserves_relevance_on_bias_free_relu_net():
    clf = tiny(bias=False, seed=1)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    zplus = rules.ZPlus(stabilizer=1e-12)
    comp = composites.Composite("zplus", ((composites.CONV + composites.LINEAR, zplus),),
                                sum_epsilon=1e-12)
    e = mindlens.explain(clf, x, "lrp", composite=comp)
    assert set(e.extras["rules"].values()) == {"ZPlus"}
    torch.testing.assert_close(e.extras["conservation"], torch.ones_like(e.scores),
                               rtol=1e-6, atol=0)


def test_residual_sum_rule_conserves_and_plain_gradient_would_double():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 3, bias=False), nn.Linear(4, 3, bias=False)
            self.out = nn.Linear(3, 2, bias=False)

        def forward(self, x):
            x = x.flatten(1)
            return self.out(torch.add(self.a(x), self.b(x)))

    torch.manual_seed(2)
    model = Res().double()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    clf = mindlens.Classifier(model, (1, 1), 4)
    x = torch.rand(2, 4, 1, 1, dtype=torch.float64)
    comp = composites.Composite("zplus", ((nn.Linear, rules.ZPlus(stabilizer=1e-12)),),
                                sum_epsilon=1e-12)
    e = mindlens.explain(clf, x, "lrp", composite=comp)
    torch.testing.assert_close(e.extras["conservation"], torch.ones_like(e.scores))
    assert e.extras["functional_ops"]["sum"] == 1


def test_rules_match_closed_form_on_a_dense_layer():
    torch.manual_seed(3)
    lin = nn.Linear(5, 4).double()
    x, r = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    from mindlens.methods.lrp.ops import make_op

    op = make_op(lin)
    w, b = lin.weight.detach(), lin.bias.detach()
    contrib = x[:, None, :] * w[None]  # [B, out, in]
    zp = contrib.clamp(min=0).sum(-1) + b.clamp(min=0)
    zn = contrib.clamp(max=0).sum(-1) + b.clamp(max=0)
    want = {
        "zplus": (contrib.clamp(min=0) * (r / (zp + 1e-6))[..., None]).sum(1),
        "alpha2_beta1": (2 * contrib.clamp(min=0) * (r / (zp + 1e-6))[..., None]
                         - contrib.clamp(max=0) * (r / (zn - 1e-6))[..., None]).sum(1),
        "wsquare": ((w**2)[None] * (r / ((w**2).sum(1) + b**2 + 1e-6))[..., None]).sum(1),
        "flat": (torch.ones_like(contrib) * (r / (5 + 1e-6))[..., None]).sum(1),
    }
    for name, ref in want.items():
        rule = rules.ensure_rule(name)
        got = rule.relevance(op, x, r, rule.prepare(op, x, op.forward(x, w, b)))
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12, msg=name)
    with pytest.raises(InputError, match="alpha - beta = 1"):
        rules.AlphaBeta(2.0, 2.0)
    assert torch.allclose(rules.AlphaBeta(1.0, 0.0).relevance(op, x, r, ()),
                          rules.ZPlus().relevance(op, x, r, ()))


def test_sglrp_initial_relevance_sums_to_zero_and_linearity():
    logits = torch.randn(4, 10, dtype=torch.float64) * 3
    classes = torch.tensor([0, 3, 9, 3])
    target, dual = sglrp_init(logits, classes)
    g = target - dual
    assert g.sum(1).abs().max() < 1e-12
    assert (target >= 0).all() and (dual >= 0).all()
    clf = tiny(seed=4)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    one = mindlens.explain(clf, x, "sglrp", top_k=2)
    two = mindlens.explain(clf, x, "sglrp", top_k=2, scaling=True)
    assert one.cost.backward == 2 and two.cost.backward == 4
    clrp = mindlens.explain(clf, x, "clrp", relu=True)
    assert (clrp.raw >= 0).all() and not clrp.signed


def _unit_relevance_maps(clf: mindlens.Classifier, x: torch.Tensor, k: int) -> torch.Tensor:
    """LRP from a unit relevance at each of the ``k`` outputs: ``[B, k, H, W]``."""
    e = mindlens.explain(clf, x, "lrp", target=torch.arange(k).expand(x.shape[0], k),
                         init="one")
    return e.maps


def test_sglrp_and_clrp_are_lrp_of_their_initial_vectors():
    """Spec 6.5, tests 2 and 5: relevance propagation is linear in the initial relevance,
    so with lambda = 1 SGLRP is sum_n g_n LRP(unit n), and CLRP is
    z_t LRP(unit t) - z_t / (K - 1) sum_{n != t} LRP(unit n) (its dual virtual class)."""
    clf = tiny(seed=7)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    logits = clf(x).detach()
    k = logits.shape[1]
    unit = _unit_relevance_maps(clf, x, k)
    sg = mindlens.explain(clf, x, "sglrp", top_k=2)
    cl = mindlens.explain(clf, x, "clrp", top_k=2, scaling=False)
    for t in range(2):
        cls = sg.targets[:, t]
        target, dual = sglrp_init(logits, cls)
        expected = torch.einsum("bk,bkhw->bhw", target - dual, unit)
        torch.testing.assert_close(sg.maps[:, t], expected, rtol=1e-6, atol=1e-12)
        z_t = logits.gather(1, cls[:, None])
        others = torch.ones_like(logits).scatter_(1, cls[:, None], 0.0)
        vec = torch.zeros_like(logits).scatter_(1, cls[:, None], z_t) - z_t / (k - 1) * others
        expected = torch.einsum("bk,bkhw->bhw", vec, unit)
        torch.testing.assert_close(cl.maps[:, t], expected, rtol=1e-6, atol=1e-12)


def test_batch_independence():
    clf = tiny(seed=5)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    full = mindlens.explain(clf, x, "lrp", target=1)
    single = mindlens.explain(clf, x[1:2], "lrp", target=1)
    torch.testing.assert_close(full.maps[1:2], single.maps)


def test_unsupported_layer_names_it_and_a_supplied_rule_works():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))

        def forward(self, x):
            return x * self.weight.view(1, -1, 1, 1)

    model = nn.Sequential(Scale(), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 4)).double()
    clf = mindlens.Classifier(model, (8, 8), 3)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(NotApplicableError, match=r"layer '0' \(Scale\).*composite="):
        mindlens.explain(clf, x, "lrp")
    e = mindlens.explain(clf, x, "lrp", composite={Scale: "epsilon"}.__class__(
        {Scale: rules.Epsilon(1e-12), nn.Conv2d: rules.Epsilon(1e-12),
         nn.Linear: rules.Epsilon(1e-12)}))
    ref = mindlens.explain(clf, x, "saliency", times_input=True, reduction="sum")
    assert e.extras["first_layer"] == "1"
    with pytest.raises(AssertionError):  # flat first layer is not gradient x input
        torch.testing.assert_close(e.maps, ref.maps)
    comp = composites.get("epsilon", 1e-12).with_map({Scale: rules.Epsilon(1e-12)})
    e = mindlens.explain(clf, x, "lrp", composite=comp)
    torch.testing.assert_close(e.maps, ref.maps, rtol=1e-8, atol=1e-10)


def test_unsupported_functional_op_names_op_and_module():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.tanh(y)  # a product without a sigmoid gate has no rule

    model = nn.Sequential(Gate(), nn.Flatten(), nn.Linear(3 * 16, 2))
    clf = mindlens.Classifier(model, (4, 4), 3)
    before = fingerprint(model)
    with pytest.raises(NotApplicableError, match=r"'mul'.*module '0'"):
        mindlens.explain(clf, torch.randn(1, 3, 4, 4), "lrp")
    assert_untouched(before, model)


def test_model_untouched_also_after_an_error_half_way(resnet20):
    x = resnet20.preprocess(asset_images("foolbox/cifar10_0*.png")[:2])
    before = fingerprint(resnet20.module)
    mindlens.explain(resnet20, x, "lrp", top_k=2)
    assert_untouched(before, resnet20.module)
    with pytest.raises(InputError):  # raised inside the patched forward/backward
        mindlens.explain(resnet20, x, "sglrp", target=10)
    assert_untouched(before, resnet20.module)
    def boom(module, inputs, output):
        if output.shape[0] == 2:  # the trace (one image) passes, the LRP pass fails half-way
            raise RuntimeError("boom")

    handle = resnet20.module.layer2.register_forward_hook(boom)
    try:
        before = fingerprint(resnet20.module)
        with pytest.raises(RuntimeError, match="boom"):
            mindlens.explain(resnet20, x, "lrp")
        assert_untouched(before, resnet20.module)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", ["cifar10_resnet20", "mobilenet_v2"])
def test_lrp0_equals_gradient_times_input_on_assets(name, request):
    clf = request.getfixturevalue("resnet20" if name == "cifar10_resnet20" else name)
    pattern = "foolbox/cifar10_0[0-1]*.png" if "cifar" in name else "foolbox/imagenet_00*.jpg"
    x = clf.preprocess(asset_images(pattern))
    e = mindlens.explain(clf, x, "lrp", composite="epsilon", epsilon=1e-12)
    ref = mindlens.explain(clf, x, "saliency", times_input=True, reduction="sum")
    assert e.extras["functional_ops"]["sum"] >= 9  # residual adds seen
    if "cifar" in name:
        assert len(e.extras["merged_batchnorm"]) == 19
    err = (e.maps - ref.maps).abs().amax((1, 2, 3)) / ref.maps.abs().amax((1, 2, 3))
    assert err.max() < 1e-4
    gb = mindlens.explain(clf, x, "lrp", composite="epsilon_gamma_box")
    assert torch.isfinite(gb.maps).all() and gb.extras["first_layer"] is not None


def _pairs(pattern: str, n: int):
    by: dict[int, object] = {}
    for p in asset_images(pattern):
        by.setdefault(int(p.stem.split("_")[-1]), p)
    labels = sorted(by)[: n + 1]
    return [(by[labels[i]], by[labels[i + 1]], labels[i], labels[i + 1]) for i in range(n)]


@pytest.mark.parametrize("name", ["cifar10_resnet20", "mobilenet_v2"])
def test_sglrp_is_more_class_discriminative_than_lrp(name, request):
    """Two real test images side by side; each half is its object's mask. Mean share of
    positive relevance on the explained class's half, over both halves of several pairs."""
    clf = request.getfixturevalue("resnet20" if name == "cifar10_resnet20" else name)
    pattern, n = (("foolbox/cifar10_*.png", 4) if "cifar" in name
                  else ("foolbox/imagenet_*.jpg", 2))
    share: dict[str, list[float]] = {"lrp": [], "sglrp": []}
    for a, b, la, lb in _pairs(pattern, n):
        x = torch.cat(list(clf.preprocess([a, b])), dim=-1)[None]
        w = x.shape[-1] // 2
        target = torch.tensor([[la, lb]]) - clf.logit_offset
        for method in share:
            pos = mindlens.explain(clf, x, method, target=target).maps[0].clamp(min=0)
            share[method] += [(pos[0, :, :w].sum() / pos[0].sum()).item(),
                              (pos[1, :, w:].sum() / pos[1].sum()).item()]
    mean = {m: sum(v) / len(v) for m, v in share.items()}
    print(f"{name}: share of positive relevance on the explained half {mean}")
    assert mean["sglrp"] > mean["lrp"]
