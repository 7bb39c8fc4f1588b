"""Vanilla gradient saliency (spec section 3): finite differences, linear model, batch
independence, channel reductions, top-k sharing one forward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mindlens
from mindlens.methods.base import reduce_channels
from mindlens.targets import Targets


def classifier(module: nn.Module, size: int = 8, channels: int = 3) -> mindlens.Classifier:
    return mindlens.Classifier(module.double(), (size, size), channels)


def smooth_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 5, 3, stride=2),
        nn.Tanh(), nn.Flatten(), nn.Linear(5 * 3 * 3, 6),
    )


class Counting(nn.Module):
    """Counts forward calls of the wrapped model (the method must not re-run it per class)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_gradient_equals_finite_differences() -> None:
    clf = classifier(smooth_cnn())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = [4, 1]
    raw = mindlens.explain(clf, x, "saliency", target=target).raw[:, 0]
    gen = torch.Generator().manual_seed(2)
    h = 1e-5
    with torch.no_grad():
        for _ in range(20):
            b, c, i, j = (int(torch.randint(n, (1,), generator=gen)) for n in (2, 3, 8, 8))
            xp, xm = x.clone(), x.clone()
            xp[b, c, i, j] += h
            xm[b, c, i, j] -= h
            fd = (clf.module(xp)[b, target[b]] - clf.module(xm)[b, target[b]]) / (2 * h)
            assert float(raw[b, c, i, j]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_linear_model_gradient_is_the_weight_row() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(3 * 4 * 4, 7)
    clf = classifier(nn.Sequential(nn.Flatten(), lin), size=4)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    e = mindlens.explain(clf, x, "saliency", target=[0, 6, 2], reduction="sum")
    w = lin.weight.detach()
    for b, c in enumerate([0, 6, 2]):
        assert torch.equal(e.raw[b, 0], w[c].view(3, 4, 4))
    assert e.scores[:, 0].tolist() == pytest.approx(
        [float(lin(x[b].flatten())[c].detach()) for b, c in enumerate([0, 6, 2])])


def test_batch_independence_with_batchnorm_in_train_mode() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.train()  # the method must explain the eval-mode model, sample by sample
    clf = classifier(net)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    batch = mindlens.explain(clf, x, "saliency", target=3)
    for b in range(4):
        alone = mindlens.explain(clf, x[b : b + 1], "saliency", target=3)
        torch.testing.assert_close(alone.raw[0], batch.raw[b], rtol=1e-12, atol=1e-14)
    assert net.training and net[1].training


@pytest.mark.parametrize("how", ["max_abs", "sum", "abs_sum", "l2"])
def test_reductions(how: str) -> None:
    clf = classifier(smooth_cnn())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    e = mindlens.explain(clf, x, "saliency", top_k=2, reduction=how)
    raw = e.raw
    assert raw.shape == (2, 2, 3, 8, 8) and e.maps.shape == (2, 2, 8, 8)
    expected = {
        "max_abs": raw.abs().amax(dim=2), "sum": raw.sum(dim=2),
        "abs_sum": raw.abs().sum(dim=2), "l2": raw.pow(2).sum(dim=2).sqrt(),
    }[how]
    torch.testing.assert_close(e.maps, expected, rtol=0, atol=0)
    assert e.signed == (how == "sum")
    if how != "sum":
        assert (e.maps >= 0).all()
    assert torch.equal(reduce_channels(raw, how), e.maps)


def test_times_input() -> None:
    clf = classifier(smooth_cnn())
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    g = mindlens.explain(clf, x, "saliency", target=2, reduction="sum")
    gx = mindlens.explain(clf, x, "saliency", target=2, reduction="sum", times_input=True)
    torch.testing.assert_close(gx.raw, g.raw * x[:, None], rtol=0, atol=0)


def test_top_k_equals_per_class_runs_and_shares_one_forward() -> None:
    inner = smooth_cnn()
    net = Counting(inner)
    clf = classifier(net)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    top = mindlens.explain(clf, x, "saliency", top_k=4)
    assert top.cost.forward == 1 and top.cost.backward == 4
    assert net.calls == 1
    logits = inner(x)
    assert torch.equal(top.targets, logits.topk(4, dim=1).indices)
    torch.testing.assert_close(top.scores, logits.gather(1, top.targets).detach())
    torch.testing.assert_close(top.probs, logits.softmax(1).gather(1, top.targets).detach())
    for t in range(4):
        one = mindlens.explain(clf, x, "saliency", target=top.targets[:, t].tolist())
        torch.testing.assert_close(one.raw[:, 0], top.raw[:, t], rtol=0, atol=0)


def test_callable_target_is_the_gradient_of_its_score() -> None:
    clf = classifier(smooth_cnn())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    e = mindlens.explain(clf, x, "saliency", target=lambda z: z[:, 0] - z[:, 1],
                         reduction="sum")
    a = mindlens.explain(clf, x, "saliency", target=0, reduction="sum")
    b = mindlens.explain(clf, x, "saliency", target=1, reduction="sum")
    torch.testing.assert_close(e.raw, a.raw - b.raw)
    assert e.targets.tolist() == [[-1], [-1]]
    assert torch.isnan(e.probs).all()


def test_targets_resolution_errors() -> None:
    logits = torch.zeros(2, 5)
    with pytest.raises(mindlens.InputError, match="out of range"):
        Targets(5).resolve(logits)
    with pytest.raises(mindlens.InputError, match="3 entries for 2 images"):
        Targets([0, 1, 2]).resolve(logits)
    with pytest.raises(mindlens.InputError, match="only 5 classes"):
        Targets(None, top_k=6).resolve(logits)
    with pytest.raises(mindlens.InputError, match="top_k"):
        Targets(None, top_k=0)


def test_saliency_on_a_real_model_matches_plain_autograd(resnet20: mindlens.Classifier
                                                        ) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    e = mindlens.explain(resnet20, x, "saliency", target=[3, 7])
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(resnet20.module(xg)[[0, 1], [3, 7]].sum(), xg)
    torch.testing.assert_close(e.raw[:, 0], g, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(e.maps[:, 0], g.abs().amax(dim=1), rtol=1e-6, atol=1e-7)
