"""Input x Gradient and Integrated Gradients (spec methods-more.md §14-§15): closed forms,
Euler's identity, quadrature tables, convergence order, chunking invariance, and Captum
on real asset models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mindlens
from mindlens.methods.attribution import quadrature

F64 = torch.float64


def clf_of(module: nn.Module, size: int = 8, channels: int = 3, **kw) -> mindlens.Classifier:
    return mindlens.Classifier(module.double().eval(), (size, size), channels, **kw)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def bias_free_relu_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(6, 4, 3, padding=1, bias=False), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 5, bias=False))


def smooth_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 3),
                         nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


class Quadratic(nn.Module):
    """``S(x) = 0.5 x^T Q x`` (one output) or ``sum c x^3`` (``cubic=True``)."""

    def __init__(self, d: int, cubic: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        a = torch.randn(d, d, generator=g, dtype=F64)
        self.q = nn.Parameter(a + a.T)
        self.c = nn.Parameter(torch.randn(d, generator=g, dtype=F64))
        self.cubic = cubic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        if self.cubic:
            return (self.c * z**3).sum(1, keepdim=True)
        return 0.5 * ((z @ self.q) * z).sum(1, keepdim=True)


# -- Input x Gradient ---------------------------------------------------------------------
def test_ixg_linear_model_is_w_times_x() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3 * 4 * 4, 5)
    clf = clf_of(nn.Sequential(nn.Flatten(), lin), size=4)
    x = randn(2, 3, 4, 4)
    e = mindlens.explain(clf, x, "input_x_gradient", target=[1, 3])
    w = lin.weight.detach().view(5, 3, 4, 4)
    torch.testing.assert_close(e.raw[:, 0], torch.stack([w[1], w[3]]) * x, rtol=0, atol=1e-12)
    assert e.signed and e.params["reduction"] == "sum"


def test_ixg_euler_identity_on_bias_free_relu_net() -> None:
    clf = clf_of(bias_free_relu_net())
    x = randn(3, 3, 8, 8, seed=1)
    e = mindlens.explain(clf, x, "input_x_gradient", top_k=2)
    torch.testing.assert_close(e.maps.flatten(2).sum(2), e.scores, rtol=1e-10, atol=1e-12)


def test_ixg_model_space_is_pixels_minus_mean_times_pixel_gradient() -> None:
    net = smooth_net()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    clf = clf_of(net, mean=mean, std=std)
    pix = torch.rand(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    e = mindlens.explain(clf, clf.spec.normalize(pix), "input_x_gradient", target=1)
    pg = pix.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(clf.spec.normalize(pg))[:, 1].sum(), pg)
    m = torch.tensor(mean, dtype=F64).view(1, 3, 1, 1)
    torch.testing.assert_close(e.raw[:, 0], (pix - m) * g, rtol=1e-10, atol=1e-13)


def test_ixg_equals_lrp0_on_relu_net_with_biases(lenet) -> None:
    """Ancona et al. 2018: on a ReLU network, LRP-epsilon with epsilon -> 0 is x * grad."""
    x = randn(2, 3, 32, 32, seed=4).float()
    ixg = mindlens.explain(lenet, x, "input_x_gradient", target=[3, 5])
    lrp = mindlens.explain(lenet, x, "lrp", target=[3, 5], composite="epsilon", epsilon=1e-9)
    scale = float(ixg.raw.abs().max())
    torch.testing.assert_close(lrp.raw, ixg.raw, rtol=0, atol=1e-4 * scale)


def test_ixg_batch_independent_and_no_parameter_grads() -> None:
    clf = clf_of(smooth_net())
    x = randn(3, 3, 8, 8, seed=5)
    both = mindlens.explain(clf, x, "input_x_gradient", target=2)
    one = mindlens.explain(clf, x[1:2], "input_x_gradient", target=2)
    torch.testing.assert_close(both.raw[1:2], one.raw, rtol=1e-12, atol=1e-14)
    assert all(p.grad is None for p in clf.module.parameters())


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "lenet"])
def test_ixg_equals_captum_on_asset_models(name, request) -> None:
    """Captum 0.9 InputXGradient(model).attribute(x.clone(), target=t) on the same eval
    float32 model; raw attributions compared within 1e-5 of their max."""
    from captum.attr import InputXGradient
    clf = request.getfixturevalue(name)
    size = clf.input_size
    x = randn(2, 3, *size, seed=6).float()
    t = torch.tensor([1, 7])
    ours = mindlens.explain(clf, x, "input_x_gradient", target=t.tolist())
    peer = InputXGradient(clf.module).attribute(x.clone(), target=t + clf.logit_offset).detach()
    torch.testing.assert_close(ours.raw[:, 0], peer, rtol=0,
                               atol=1e-5 * float(peer.abs().max()))


# -- quadrature ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_quadrature_tables(n: int) -> None:
    k = np.arange(n)
    table = {"left": (k / n, np.full(n, 1 / n)), "right": ((k + 1) / n, np.full(n, 1 / n)),
             "middle": ((k + 0.5) / n, np.full(n, 1 / n))}
    trap = np.full(n, 1 / (n - 1))
    trap[[0, -1]] /= 2
    table["trapezoid"] = (k / (n - 1), trap)
    ctrap = np.full(n, 1 / n)
    ctrap[[0, -1]] /= 2
    table["captum_trapezoid"] = (k / (n - 1), ctrap)
    t, w = np.polynomial.legendre.leggauss(n)
    table["gauss_legendre"] = ((1 + t) / 2, w / 2)
    for rule, (nodes, weights) in table.items():
        a, b = quadrature(rule, n)
        np.testing.assert_allclose(a, nodes, rtol=0, atol=1e-15)
        np.testing.assert_allclose(b, weights, rtol=0, atol=1e-15)
        assert sum(b) == pytest.approx((n - 1) / n if rule == "captum_trapezoid" else 1.0,
                                       abs=1e-14)


def test_quadrature_captum_rounding_is_captum_own() -> None:
    from captum.attr._utils.approximation_methods import approximation_parameters
    ours = {"left": "riemann_left", "right": "riemann_right", "middle": "riemann_middle",
            "captum_trapezoid": "riemann_trapezoid", "gauss_legendre": "gausslegendre"}
    for rule, peer in ours.items():
        for n in (2, 17, 50):
            steps, alphas = approximation_parameters(peer)
            a, w = quadrature(rule, n, "captum")
            assert a == [float(v) for v in alphas(n)]
            assert w == torch.tensor(steps(n)).float().tolist()


# -- Integrated Gradients: closed forms ----------------------------------------------------
@pytest.mark.parametrize("n", [2, 5, 16])
def test_ig_quadratic_closed_form(n: int) -> None:
    clf = clf_of(Quadratic(12), size=2)
    x = randn(1, 3, 2, 2, seed=7)
    z = x.flatten(1)
    qx = (z @ clf.module.q.detach()).view_as(x)
    c = {"middle": 0.5, "trapezoid": 0.5, "gauss_legendre": 0.5, "right": (n + 1) / (2 * n),
         "left": (n - 1) / (2 * n), "captum_trapezoid": 0.5 - 1 / (2 * n)}
    for rule, coef in c.items():
        e = mindlens.explain(clf, x, "integrated_gradients", target=0, rule=rule, n_steps=n,
                             delta_tolerance=10.0)
        torch.testing.assert_close(e.raw[:, 0], coef * x * qx, rtol=1e-12, atol=1e-13)
        if coef == 0.5:
            assert abs(float(e.extras["delta"][0, 0])) < 1e-12


@pytest.mark.parametrize("n", [2, 5, 16])
def test_ig_cubic_closed_form(n: int) -> None:
    clf = clf_of(Quadratic(12, cubic=True), size=2)
    x = randn(1, 3, 2, 2, seed=8)
    cx3 = 3 * clf.module.c.detach().view_as(x) * x**3
    kappa = {"gauss_legendre": 1 / 3, "middle": 1 / 3 - 1 / (12 * n**2),
             "right": (n + 1) * (2 * n + 1) / (6 * n**2),
             "left": (n - 1) * (2 * n - 1) / (6 * n**2),
             "trapezoid": n * (2 * n - 1) / (6 * (n - 1) ** 2) - 1 / (2 * (n - 1)),
             "captum_trapezoid": (2 * n - 1) / (6 * (n - 1)) - 1 / (2 * n)}
    for rule, k in kappa.items():
        e = mindlens.explain(clf, x, "integrated_gradients", target=0, rule=rule, n_steps=n,
                             delta_tolerance=10.0)
        torch.testing.assert_close(e.raw[:, 0], k * cx3, rtol=1e-12, atol=1e-13)


def test_ig_homogeneous_relu_net_zero_baseline() -> None:
    clf = clf_of(bias_free_relu_net())
    x = randn(2, 3, 8, 8, seed=9)
    n = 6
    ixg = mindlens.explain(clf, x, "input_x_gradient", target=[0, 4]).raw
    factor = {"right": 1.0, "middle": 1.0, "gauss_legendre": 1.0, "left": (n - 1) / n,
              "captum_trapezoid": (2 * n - 3) / (2 * n)}
    for rule, f in factor.items():
        e = mindlens.explain(clf, x, "integrated_gradients", target=[0, 4], rule=rule,
                             n_steps=n, delta_tolerance=10.0)
        torch.testing.assert_close(e.raw, f * ixg, rtol=1e-10, atol=1e-12)


def test_ig_convergence_orders_on_smooth_net() -> None:
    clf = clf_of(smooth_net())
    x = randn(1, 3, 8, 8, seed=10)

    def delta(rule: str, n: int) -> float:
        e = mindlens.explain(clf, x, "integrated_gradients", target=1, rule=rule,
                             n_steps=n, baseline="black", delta_tolerance=10.0)
        return abs(float(e.extras["delta"][0, 0]))

    for rule, order in (("left", 2), ("right", 2), ("middle", 4), ("trapezoid", 4)):
        ratio = delta(rule, 16) / delta(rule, 32)
        assert order * 0.75 <= ratio <= order * 1.25, (rule, ratio)
    e = mindlens.explain(clf, x, "integrated_gradients", target=1, n_steps=16,
                         baseline="black")
    assert float(e.extras["delta_rel"][0, 0]) < 1e-6


def test_ig_chunking_null_path_symmetry_and_delta_bookkeeping() -> None:
    clf = clf_of(smooth_net())
    x = randn(3, 3, 8, 8, seed=11)
    runs = [mindlens.explain(clf, x, "integrated_gradients", top_k=2, n_steps=5,
                             internal_batch_size=c, baseline="blur", delta_tolerance=10.0)
            for c in (1, 7, None)]
    for r in runs[1:]:
        torch.testing.assert_close(r.raw, runs[0].raw, rtol=0, atol=1e-12)
    e = runs[0]
    with torch.no_grad():
        from mindlens.methods.perturbation import gaussian_blur
        sb = clf.module(gaussian_blur(x, [5.0, 5.0])).gather(1, e.targets)
    torch.testing.assert_close(e.extras["delta"], e.raw.flatten(2).sum(2) - (e.scores - sb))
    null = mindlens.explain(clf, x, "integrated_gradients", target=0, baseline=x.clone())
    assert float(null.raw.abs().max()) == 0 and float(null.extras["delta"].abs().max()) == 0

    class Sym(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            f = z.flatten(1)
            return torch.tanh(f[:, :1] + f[:, 1:2]) * 3 + f[:, 2:3]

    sym = mindlens.Classifier(Sym(), (1, 3), channels=1)
    xs = torch.tensor([[[[0.7, 0.7, -1.0]]]], dtype=F64)
    r = mindlens.explain(sym, xs, "integrated_gradients", target=0).raw[0, 0, 0, 0]
    assert float(r[0]) == float(r[1])


def test_ig_reparametrisation_pixel_space() -> None:
    net = smooth_net()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    clf = clf_of(net, mean=mean, std=std)

    class PixelIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, p: torch.Tensor) -> torch.Tensor:
            return self.net(clf.spec.normalize(p))

    pix_clf = mindlens.Classifier(PixelIn(), (8, 8), 3)
    pix = torch.rand(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(12))
    model_space = mindlens.explain(clf, clf.spec.normalize(pix), "integrated_gradients",
                                   target=2, baseline="black", n_steps=8)
    pixel_space = mindlens.explain(pix_clf, pix, "integrated_gradients", target=2,
                                   baseline=torch.zeros(1, 3, 1, 1, dtype=F64), n_steps=8)
    torch.testing.assert_close(model_space.raw, pixel_space.raw, rtol=1e-10, atol=1e-12)


def test_ig_bad_parameters_say_the_fix() -> None:
    for kw, match in (({"rule": "simpson"}, "rule must be one of"),
                      ({"n_steps": 1, "rule": "left"}, "n_steps must be an integer >= 2"),
                      ({"internal_batch_size": 0}, "internal_batch_size"),
                      ({"baseline": "grey"}, "baseline must be one of"),
                      ({"node_dtype": "half"}, "node_dtype")):
        with pytest.raises(mindlens.InputError, match=match):
            mindlens.methods.get("integrated_gradients")(**kw)


# -- Captum cross-checks --------------------------------------------------------------------
CAPTUM_RULES = {"left": "riemann_left", "right": "riemann_right", "middle": "riemann_middle",
                "captum_trapezoid": "riemann_trapezoid", "gauss_legendre": "gausslegendre"}


@pytest.mark.parametrize("rule", list(CAPTUM_RULES))
def test_ig_equals_captum_float64(rule: str) -> None:
    """Captum IntegratedGradients(model, multiply_by_inputs=True).attribute(x, baselines=b,
    target=t, n_steps=n, method=m, internal_batch_size=None | 3B,
    return_convergence_delta=True), float64 model; mindlens the same rule with
    node_dtype="captum"."""
    from captum.attr import IntegratedGradients
    clf = clf_of(smooth_net())
    x = randn(2, 3, 8, 8, seed=13)
    b = randn(2, 3, 8, 8, seed=14) * 0.1
    t = torch.tensor([2, 0])
    for n in (2, 17):
        ours = mindlens.explain(clf, x, "integrated_gradients", target=t.tolist(), baseline=b,
                                rule=rule, n_steps=n, node_dtype="captum",
                                internal_batch_size=None, delta_tolerance=10.0)
        for ibs in (None, 6):
            attr, delta = IntegratedGradients(clf.module).attribute(
                x.clone(), baselines=b, target=t, n_steps=n, method=CAPTUM_RULES[rule],
                internal_batch_size=ibs, return_convergence_delta=True)
            torch.testing.assert_close(ours.raw[:, 0], attr, rtol=0, atol=1e-12)
            torch.testing.assert_close(ours.extras["delta"][:, 0], delta, rtol=0, atol=1e-12)
        exact = mindlens.explain(clf, x, "integrated_gradients", target=t.tolist(),
                                 baseline=b, rule=rule, n_steps=n, delta_tolerance=10.0)
        torch.testing.assert_close(exact.raw, ours.raw, rtol=1e-6,
                                   atol=1e-6 * float(ours.raw.abs().max()))


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "lenet"])
def test_ig_equals_captum_on_asset_models(name, request) -> None:
    """Captum IntegratedGradients(model).attribute(x.clone(), target=t, n_steps=4,
    method="gausslegendre", internal_batch_size=4) with the zero baseline, float32 eval
    model; mindlens n_steps=4, internal_batch_size=3 (other chunks than Captum's),
    channels_last=False (the kernels Captum's ordinary batches run); raw attributions
    within 1e-5 of their max. The default channels-last batches run other kernels, and a
    ReLU6 gradient flips where a pre-activation sits on a kink: that map is checked
    against the same one (Pearson r > 0.999, max error < 2 % of the max). One image on
    mobilenet_v2 (224 px) for time."""
    from captum.attr import IntegratedGradients
    clf = request.getfixturevalue(name)
    b = 1 if name == "mobilenet_v2" else 2
    x = randn(b, 3, *clf.input_size, seed=15).float()
    t = torch.tensor([3, 9][:b])
    kw = {"target": t.tolist(), "n_steps": 4, "internal_batch_size": 3,
          "delta_tolerance": 10.0}
    ours = mindlens.explain(clf, x, "integrated_gradients", channels_last=False, **kw)
    peer = IntegratedGradients(clf.module).attribute(
        x.clone(), target=t + clf.logit_offset, n_steps=4, method="gausslegendre",
        internal_batch_size=4).detach()
    scale = float(peer.abs().max())
    torch.testing.assert_close(ours.raw[:, 0], peer, rtol=0, atol=1e-5 * scale)
    fast = mindlens.explain(clf, x, "integrated_gradients", **kw).raw[:, 0]
    assert float((fast - peer).abs().max()) < 0.02 * scale
    assert float(torch.corrcoef(torch.stack([fast.flatten(), peer.flatten()]))[0, 1]) > 0.999
