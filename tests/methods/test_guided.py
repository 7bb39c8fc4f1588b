"""Guided Backpropagation and DeconvNet (spec section 4): by-definition references,
Captum as oracle, every way of writing a ReLU, ReLU6, other activations."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens

from ..conftest import load_asset


def explain_raw(module: nn.Module, x: torch.Tensor, method: str, target, size: int,
                **params) -> torch.Tensor:
    clf = mindlens.Classifier(module, (size, size), x.shape[1])
    return mindlens.explain(clf, x, method, target=target, **params).raw[:, 0]


# -- by-definition references ---------------------------------------------------------
def mlp_weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = [16, 12, 10, 5]
    return [(rng.normal(size=(o, i)), rng.normal(scale=0.3, size=o))
            for i, o in itertools.pairwise(sizes)]


def manual_backprop(weights, x: np.ndarray, c: int, rule: str) -> np.ndarray:
    """The rule at each ReLU, written out in NumPy: R_in = gate * R."""
    pre, h = [], x
    for i, (w, b) in enumerate(weights):
        a = w @ h + b
        if i + 1 < len(weights):
            pre.append(a)
            h = np.maximum(a, 0)
    r = weights[-1][0][c].copy()
    for (w, _), a in zip(reversed(weights[:-1]), reversed(pre), strict=True):
        if rule == "guided":
            r = r * (a > 0) * (r > 0)
        elif rule == "deconvnet":
            r = r * (r > 0)
        else:
            r = r * (a > 0)
        r = w.T @ r
    return r


class MLP(nn.Module):
    def __init__(self, weights) -> None:
        super().__init__()
        self.lins = nn.ModuleList()
        for w, b in weights:
            lin = nn.Linear(w.shape[1], w.shape[0]).double()
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(b))
            self.lins.append(lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for lin in self.lins[:-1]:
            h = torch.relu(lin(h))
        return self.lins[-1](h)


@pytest.mark.parametrize("method,rule", [("guided_backprop", "guided"),
                                         ("deconvnet", "deconvnet"), ("saliency", "gradient")])
def test_mlp_equals_manual_rule(method: str, rule: str) -> None:
    weights = mlp_weights()
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    targets = [0, 3, 4, 1]
    raw = explain_raw(MLP(weights), x, method, targets, 4, reduction="sum")
    for b, c in enumerate(targets):
        ref = manual_backprop(weights, x[b].flatten().numpy(), c, rule)
        np.testing.assert_allclose(raw[b].flatten().numpy(), ref, rtol=0, atol=1e-12)
    if rule != "gradient":  # the rules really differ from the gradient here
        grad = [manual_backprop(weights, x[b].flatten().numpy(), c, "gradient")
                for b, c in enumerate(targets)]
        assert not np.allclose(raw.flatten(1).numpy(), np.stack(grad))


# -- one CNN, every way of writing its ReLUs ----------------------------------------------
RELU_STYLES = ("module", "inplace", "F.relu", "torch.relu", "Tensor.relu", "relu_",
               "clamp_min", "hardtanh")


class SmallCNN(nn.Module):
    def __init__(self, style: str = "module", act6: bool = False) -> None:
        super().__init__()
        self.style, self.act6 = style, act6
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 5)
        if style in ("module", "inplace"):
            inplace = style == "inplace"
            mod = nn.ReLU6 if act6 else nn.ReLU
            self.r1, self.r2, self.r3 = mod(inplace), mod(inplace), mod(inplace)

    def act(self, i: int, x: torch.Tensor) -> torch.Tensor:
        s = self.style
        if s in ("module", "inplace"):
            return getattr(self, f"r{i}")(x)
        if self.act6:
            return {"F.relu": F.relu6, "hardtanh": lambda t: F.hardtanh(t, 0.0, 6.0),
                    "clamp_min": lambda t: t.clamp(min=0, max=6)}[s](x)
        return {"F.relu": F.relu, "torch.relu": torch.relu, "Tensor.relu": torch.Tensor.relu,
                "relu_": lambda t: t.relu_(), "clamp_min": lambda t: t.clamp(min=0),
                "hardtanh": lambda t: F.hardtanh(t, 0.0, float("inf"))}[s](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(1, self.conv1(x)), 2)
        x = F.max_pool2d(self.act(2, self.conv2(x)), 2)
        return self.fc2(self.act(3, self.fc1(x.flatten(1))))


def small_cnn(style: str, act6: bool = False, scale: float = 1.0) -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN(style, act6).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def cnn_input(scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return scale * torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_equals_captum_on_relu_modules(method: str) -> None:
    from captum.attr import Deconvolution, GuidedBackprop

    net, x, targets = small_cnn("module"), cnn_input(), torch.tensor([0, 2, 4])
    ours = explain_raw(net, x, method, targets.tolist(), 16, reduction="sum")
    peer = {"guided_backprop": GuidedBackprop, "deconvnet": Deconvolution}[method](net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = peer.attribute(x.clone(), target=targets)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("style", RELU_STYLES[1:])
def test_every_relu_style_gives_the_same_map(style: str) -> None:
    x = cnn_input()
    ref = explain_raw(small_cnn("module"), x, "guided_backprop", [1, 2, 3], 16, reduction="sum")
    got = explain_raw(small_cnn(style), x, "guided_backprop", [1, 2, 3], 16, reduction="sum")
    assert torch.equal(ref, got)


@pytest.mark.parametrize("style", ["module", "inplace", "F.relu", "hardtanh", "clamp_min"])
def test_relu6_gate(style: str) -> None:
    """GBP at ReLU6 passes 1[0 < a < 6] * relu(R); checked against the same net with a
    custom autograd ReLU6 written from the definition."""
    scale = 3.0  # large enough that some activations saturate at 6
    net = small_cnn(style, act6=True, scale=scale)
    x = cnn_input(scale)
    ours = explain_raw(net, x, "guided_backprop", [0, 1, 2], 16, reduction="sum")
    ref_net = small_cnn("F.relu", act6=True, scale=scale)
    ref_net.act = lambda i, t: _Relu6Ref.apply(t)  # type: ignore[method-assign]
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ref_net(xg)[[0, 1, 2], [0, 1, 2]].sum(), xg)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    with torch.no_grad():  # the test is meaningful only if the upper gate was hit
        assert (ref_net.conv1(x) > 6).any()


def test_network_without_relu_gives_the_gradient() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 5)).double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    gbp = explain_raw(net, x, "guided_backprop", [1, 4], 8, reduction="sum")
    grad = explain_raw(net, x, "saliency", [1, 4], 8, reduction="sum")
    assert torch.equal(gbp, grad)


def silu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()


def test_other_activations_warn_by_default_and_can_raise() -> None:
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match="silu"):
        e = mindlens.explain(mindlens.Classifier(silu_net(), (8, 8)), x, "guided_backprop")
    assert e.extras["other_activations"] == {"silu": 1}
    assert sum(e.extras["activations"].values()) == 1
    net = silu_net()
    with pytest.raises(mindlens.NotApplicableError, match="silu"):
        mindlens.explain(mindlens.Classifier(net, (8, 8)), x, "guided_backprop",
                         other_activations="error")
    with pytest.raises(mindlens.InputError, match="other_activations"):
        mindlens.explain(mindlens.Classifier(net, (8, 8)), x, "guided_backprop",
                         other_activations="ignore")


def test_gate_policy_treats_other_activations_like_relu() -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    gated = explain_raw(silu_net(), x, "guided_backprop", [0, 2], 8, reduction="sum",
                        other_activations="gate")

    class Ref(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):  # type: ignore[override]
            ctx.save_for_backward(a)
            return F.silu(a)

        @staticmethod
        def backward(ctx, r):  # type: ignore[override]
            (a,) = ctx.saved_tensors
            return r.clamp_min(0) * (a > 0)

    net = silu_net()
    net[1] = type("G", (nn.Module,), {"forward": lambda self, a: Ref.apply(a)})()
    net[3] = type("R", (nn.Module,), {"forward": lambda self, a: _GuidedRelu.apply(a)})()
    xg = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(net(xg)[[0, 1], [0, 2]].sum(), xg)
    torch.testing.assert_close(gated, ref, rtol=1e-12, atol=1e-14)


class _GuidedRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):  # type: ignore[override]
        ctx.save_for_backward(a)
        return a.clamp_min(0)

    @staticmethod
    def backward(ctx, r):  # type: ignore[override]
        (a,) = ctx.saved_tensors
        return r.clamp_min(0) * (a > 0)


def test_signal_entering_every_relu_is_non_negative() -> None:
    """Spec 4, test 3: record the backward signal at each ReLU input; all >= 0."""
    seen: list[torch.Tensor] = []
    net = small_cnn("F.relu")
    relu = F.relu

    def recording_relu(t: torch.Tensor) -> torch.Tensor:
        if t.requires_grad:
            t.register_hook(lambda g: seen.append(g.detach().clone()))
        return relu(t)

    net.act = lambda i, t: recording_relu(t)  # type: ignore[method-assign]
    explain_raw(net, cnn_input(), "guided_backprop", [0, 1, 2], 16)
    assert len(seen) == 3
    assert all((g >= 0).all() for g in seen)
    assert any((g > 0).any() for g in seen)


# -- the real asset models: functional ReLUs vs the same weights with ReLU modules ----------
class ResNet20Modules(nn.Module):
    """cifar10_resnet20 (assets archs.CifarResNet) with an nn.ReLU module per call site."""

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
            self.stride, self.extra = stride, cout - cin

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            short = x
            if self.stride != 1 or self.extra:
                short = x[:, :, :: self.stride, :: self.stride]
                half = self.extra // 2
                short = F.pad(short, (0, 0, 0, 0, half, self.extra - half))
            return self.relu2(out + short)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        cin = 16
        for li, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for b in range(3):
                blocks.append(self.Block(cin, cout, stride if b == 0 else 1))
                cin = cout
            setattr(self, f"layer{li}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.linear(self.pool(x).flatten(1))


class LeNetModules(nn.Module):
    """cifar10_lenet (assets archs.captum_cifar_net) with ReLU and max-pool modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(4))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relus
        x = self.pool(r[1](self.conv2(self.pool(r[0](self.conv1(x))))))
        return self.fc3(r[3](self.fc2(r[2](self.fc1(x.flatten(1))))))


@pytest.mark.parametrize("name,rewritten", [("cifar10_resnet20", ResNet20Modules),
                                            ("cifar10_lenet", LeNetModules)])
def test_asset_model_equals_rewrite_with_relu_modules(name: str, rewritten: type) -> None:
    from captum.attr import GuidedBackprop

    clf = load_asset(name)  # a private copy, converted to float64
    clf.module.double()
    twin = rewritten().double().eval()
    twin.load_state_dict(clf.module.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), clf.module(x), rtol=1e-12, atol=1e-12)
        targets = clf.module(x).argmax(1)
    ours = mindlens.explain(clf, x, "guided_backprop", target=targets.tolist(),
                            reduction="sum")
    assert sum(ours.extras["activations"].values()) == (19 if "resnet" in name else 4)
    on_twin = explain_raw(twin, x, "guided_backprop", targets.tolist(), 32, reduction="sum")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = GuidedBackprop(twin).attribute(x.clone(), target=targets)
    scale = float(captum.abs().max())
    torch.testing.assert_close(ours.raw[:, 0], captum, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(on_twin, captum, rtol=0, atol=1e-10 * scale)
    grad = mindlens.explain(clf, x, "saliency", target=targets.tolist(), reduction="sum")
    assert not torch.allclose(grad.raw, ours.raw, atol=1e-3 * scale)


def test_mobilenet_relu6_modules_equal_captum_style_reference(mobilenet_v2) -> None:
    """mobilenet_v2 uses nn.ReLU6 modules: GBP must gate at 0 < a < 6 there (Captum's
    GuidedBackprop only knows nn.ReLU, so the reference is a by-definition hook)."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    e = mindlens.explain(mobilenet_v2, x, "guided_backprop", target=5, reduction="sum")
    assert e.extras["activations"].get("hardtanh", 0) + e.extras["activations"].get(
        "relu6", 0) == 35
    handles = []

    def hook(module: nn.Module, inputs, output):
        a = inputs[0]
        return _Relu6Ref.apply(a)

    for m in mobilenet_v2.module.modules():
        if isinstance(m, nn.ReLU6):
            handles.append(m.register_forward_hook(hook))
    try:
        xg = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(mobilenet_v2.module(xg)[0, 5 + 1], xg)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(e.raw[:, 0], ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


class _Relu6Ref(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):  # type: ignore[override]
        ctx.save_for_backward(a)
        return a.clamp(0, 6)

    @staticmethod
    def backward(ctx, r):  # type: ignore[override]
        (a,) = ctx.saved_tensors
        return r.clamp_min(0) * ((a > 0) & (a < 6))
