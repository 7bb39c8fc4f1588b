"""SmoothGrad, SmoothGrad-Squared, VarGrad (spec methods-more.md §16): zero noise, linear
and quadratic closed forms with the realised noise, seeds and chunk independence, and
Captum's NoiseTunnel with the same noise draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mindlens

F64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def smooth_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 4, 3),
                         nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()


def realised_noise(x: torch.Tensor, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The mindlens stream regenerated independently: ``[B, n, C, H, W]``."""
    out = []
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed + i)
        out.append(torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
                                for _ in range(n)]) * sigma[i])
    return torch.stack(out)


def image_sigma(x: torch.Tensor, level: float) -> torch.Tensor:
    f = x.flatten(1)
    return (level * (f.amax(1) - f.amin(1))).view(-1, 1, 1, 1)


@pytest.mark.parametrize("base", ["saliency", "input_x_gradient", "integrated_gradients"])
def test_zero_noise_and_n1_equal_the_base(base: str) -> None:
    clf = mindlens.Classifier(smooth_net(), (8, 8))
    x = randn(2, 3, 8, 8, seed=1)
    kw = {"base_params": {"n_steps": 4, "delta_tolerance": 10.0}} if base == \
        "integrated_gradients" else {}
    ref = mindlens.explain(clf, x, base, top_k=2, **kw["base_params"] if kw else {}).raw
    for n in (1, 3):
        for kind, expected in (("smoothgrad", ref), ("smoothgrad_sq", ref**2),
                               ("vargrad", torch.zeros_like(ref))):
            e = mindlens.explain(clf, x, "smoothgrad", top_k=2, base=base, kind=kind, n=n,
                                 noise_level=0.0, **kw)
            torch.testing.assert_close(e.raw, expected, rtol=1e-12, atol=1e-14)


def test_linear_model_gradient_and_input_x_gradient_closed_forms() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3 * 4 * 4, 4).double()
    clf = mindlens.Classifier(nn.Sequential(nn.Flatten(), lin).eval(), (4, 4))
    x = randn(2, 3, 4, 4, seed=2)
    w = lin.weight.detach()[2].view(3, 4, 4)
    n = 7
    sg = mindlens.explain(clf, x, "smoothgrad", target=2, n=n, batch_size=3, noise_level=0.2)
    torch.testing.assert_close(sg.raw[:, 0], w.expand(2, -1, -1, -1), rtol=1e-12, atol=1e-14)
    vg = mindlens.explain(clf, x, "smoothgrad", target=2, n=n, kind="vargrad", noise_level=0.2)
    assert float(vg.raw.abs().max()) < 1e-20
    eps = realised_noise(x, n, image_sigma(x, 0.2))
    ixg = mindlens.explain(clf, x, "smoothgrad", target=2, n=n, batch_size=4,
                           base="input_x_gradient", noise_level=0.2)
    torch.testing.assert_close(ixg.raw[:, 0], (x + eps.mean(1)) * w, rtol=1e-10, atol=1e-13)
    ixv = mindlens.explain(clf, x, "smoothgrad", target=2, n=n, base="input_x_gradient",
                           kind="vargrad", noise_level=0.2, batch_size=2)
    torch.testing.assert_close(ixv.raw[:, 0], w**2 * eps.var(1, unbiased=False), rtol=1e-10,
                               atol=1e-14)
    ixv1 = mindlens.explain(clf, x, "smoothgrad", target=2, n=n, base="input_x_gradient",
                            kind="vargrad", noise_level=0.2, ddof=1)
    torch.testing.assert_close(ixv1.raw[:, 0], w**2 * eps.var(1, unbiased=True), rtol=1e-10,
                               atol=1e-14)


def test_quadratic_model_with_realised_noise() -> None:
    class Quad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            a = randn(12, 12, seed=3)
            self.q = nn.Parameter(a + a.T)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            f = z.flatten(1)
            return 0.5 * ((f @ self.q) * f).sum(1, keepdim=True)

    quad = Quad()
    clf = mindlens.Classifier(quad, (2, 2))
    x = randn(2, 3, 2, 2, seed=4)
    n = 5
    eps = realised_noise(x, n, image_sigma(x, 0.15))
    q = quad.q.detach()
    sg = mindlens.explain(clf, x, "smoothgrad", target=0, n=n, batch_size=2)
    torch.testing.assert_close(sg.raw[:, 0], ((x + eps.mean(1)).flatten(1) @ q).view_as(x),
                               rtol=1e-10, atol=1e-12)
    vg = mindlens.explain(clf, x, "smoothgrad", target=0, n=n, kind="vargrad")
    qe = (eps.flatten(2) @ q).view_as(eps)
    torch.testing.assert_close(vg.raw[:, 0], qe.var(1, unbiased=False), rtol=1e-10,
                               atol=1e-12)
    assert float(vg.raw.min()) >= -1e-12


def test_seeded_and_independent_of_batch_size_and_other_images() -> None:
    clf = mindlens.Classifier(smooth_net(), (8, 8))
    x = randn(3, 3, 8, 8, seed=5)
    runs = {bs: mindlens.explain(clf, x, "smoothgrad", target=1, n=6, batch_size=bs,
                                 kind="vargrad") for bs in (1, 3, 6)}
    for bs in (3, 6):
        torch.testing.assert_close(runs[bs].raw, runs[1].raw, rtol=1e-10, atol=1e-14)
    alone = mindlens.explain(clf, x[:1], "smoothgrad", target=1, n=6, kind="vargrad")
    torch.testing.assert_close(alone.raw, runs[6].raw[:1], rtol=1e-10, atol=1e-14)
    again = mindlens.explain(clf, x, "smoothgrad", target=1, n=6, kind="vargrad")
    assert torch.equal(again.raw, runs[6].raw)
    other = mindlens.explain(clf, x, "smoothgrad", target=1, n=6, kind="vargrad", seed=9)
    assert not torch.allclose(other.raw, runs[6].raw)


def test_noise_ranges_box_absolute_and_bad_parameters() -> None:
    clf = mindlens.Classifier(smooth_net(), (8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = randn(1, 3, 8, 8, seed=6)
    e = mindlens.explain(clf, x, "smoothgrad", target=0, n=2, noise_range="box",
                         noise_level=0.1)
    assert e.params["sigma_used"][0] == pytest.approx([0.5, 0.4, 0.2])
    e = mindlens.explain(clf, x, "smoothgrad", target=0, n=2, noise_range="absolute",
                         sigma=0.3)
    assert e.params["sigma_used"][0] == pytest.approx([0.3])
    for kw, match in (({"kind": "sq"}, "kind must be one of"),
                      ({"base": "gradcam"}, None), ({"base": "nope"}, "unknown method"),
                      ({"noise_range": "absolute"}, "needs sigma"), ({"n": 0}, "n must be"),
                      ({"ddof": 2}, "ddof")):
        if match is None:  # a coarse base method: clear error when it runs
            with pytest.raises(mindlens.InputError, match="input-space base method"):
                mindlens.explain(clf, x, "smoothgrad", target=0, n=1, **kw)
            continue
        with pytest.raises(mindlens.InputError, match=match):
            mindlens.methods.get("smoothgrad")(**kw)


# -- Captum NoiseTunnel ----------------------------------------------------------------------
@pytest.mark.parametrize("base", ["saliency", "input_x_gradient", "integrated_gradients"])
@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_equals_captum_noise_tunnel_float64(base: str, kind: str) -> None:
    """Captum NoiseTunnel(Saliency | InputXGradient | IntegratedGradients).attribute(x,
    nt_type=kind, nt_samples=7, nt_samples_batch_size=3, stdevs=float(sigma), target=t,
    [abs=False for Saliency], [n_steps=4, method="gausslegendre" for IG]) after
    torch.manual_seed(0); mindlens noise_stream="captum", noise_range="absolute",
    batch_size=3, the same seed set just before the call. float64, CPU."""
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
    net = smooth_net()
    clf = mindlens.Classifier(net, (8, 8))
    x = randn(2, 3, 8, 8, seed=7)
    t = torch.tensor([2, 0])
    peer_cls, extra = {"saliency": (Saliency, {"abs": False}),
                       "input_x_gradient": (InputXGradient, {}),
                       "integrated_gradients": (IntegratedGradients,
                                                {"n_steps": 4, "method": "gausslegendre"})}[base]
    torch.manual_seed(0)
    peer = NoiseTunnel(peer_cls(net)).attribute(x.clone(), nt_type=kind, nt_samples=7,
                                                nt_samples_batch_size=3, stdevs=0.4,
                                                target=t, **extra)
    base_params = {"n_steps": 4, "delta_tolerance": 1e9} if base == "integrated_gradients" \
        else {}
    torch.manual_seed(0)
    ours = mindlens.explain(clf, x, "smoothgrad", target=t.tolist(), base=base,
                            base_params=base_params, kind=kind, n=7, batch_size=3,
                            noise_range="absolute", sigma=0.4, noise_stream="captum")
    torch.testing.assert_close(ours.raw[:, 0], peer.detach(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2", "lenet"])
def test_equals_captum_noise_tunnel_on_asset_models(name, request) -> None:
    """Captum NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=3,
    nt_samples_batch_size=2, stdevs=0.3, target=t, abs=False) after torch.manual_seed(1),
    float32 eval model; mindlens noise_stream="captum" with the same seed and
    channels_last=False (Captum's kernels; see test_attribution for the channels-last
    default). The raw (input-shaped) maps within 1e-5 of their max."""
    from captum.attr import NoiseTunnel, Saliency
    clf = request.getfixturevalue(name)
    x = randn(1, 3, *clf.input_size, seed=8).float()
    torch.manual_seed(1)
    peer = NoiseTunnel(Saliency(clf.module)).attribute(
        x.clone(), nt_type="smoothgrad", nt_samples=3, nt_samples_batch_size=2, stdevs=0.3,
        target=4 + clf.logit_offset, abs=False).detach()
    torch.manual_seed(1)
    ours = mindlens.explain(clf, x, "smoothgrad", target=4, n=3, batch_size=2,
                            noise_range="absolute", sigma=0.3, noise_stream="captum",
                            channels_last=False)
    torch.testing.assert_close(ours.raw[:, 0], peer, rtol=0,
                               atol=1e-5 * float(peer.abs().max()))
