"""Occlusion: equals a naive loop, Captum's Occlusion, and the spec's property tests."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import mindlens
from mindlens.errors import InputError
from mindlens.methods.perturbation.occlusion import Occlusion
from mindlens.methods.perturbation.sensitivity import baseline_sensitivity
from mindlens.methods.perturbation.windows import window_starts
from mindlens.targets import Targets

from ...conftest import assert_untouched, fingerprint


def tiny_cnn(channels: int = 2, classes: int = 4, dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d(2) if dims == 2 else nn.AdaptiveAvgPool3d(2)
    return nn.Sequential(conv(channels, 3, 3, padding=1), nn.Tanh(), pool, nn.Flatten(),
                         nn.Linear(3 * 2 ** dims, classes)).double().eval()


def tiny_clf(dims: int = 2) -> mindlens.Classifier:
    return mindlens.Classifier(tiny_cnn(dims=dims), (9, 11), channels=2, mean=(0.2, 0.4),
                               std=(0.5, 0.25))


def naive(clf, x, window, stride, border, score, agg, top_k, baseline_value=0.0):
    """Explicit Python loops over windows and pixels."""
    spatial = x.shape[2:]
    with torch.no_grad():
        logits = clf.module(x)
        classes = logits.topk(top_k, dim=1).indices

        def s(z):
            z = {"prob": z.softmax(1), "log_prob": z.log_softmax(1), "logit": z}[score]
            return z.gather(1, classes)

        s0 = s(logits)
        starts = [window_starts(n, k, st, border)
                  for n, k, st in zip(spatial, window, stride, strict=True)]
        windows = []
        for pos in itertools.product(*starts):
            xo = x.clone()
            sl = tuple(slice(p, p + k) for p, k in zip(pos, window, strict=True))
            xo[(slice(None), slice(None), *sl)] = baseline_value
            windows.append((sl, s0 - s(clf.module(xo))))
    out = torch.zeros(x.shape[0], top_k, *spatial, dtype=x.dtype)
    for b, t in itertools.product(range(x.shape[0]), range(top_k)):
        for pix in itertools.product(*(range(n) for n in spatial)):
            vals = [d[b, t] for sl, d in windows
                    if all(w.start <= i < min(w.stop, n)
                           for w, i, n in zip(sl, pix, spatial, strict=True))]
            total = {"mean": lambda v: sum(v) / len(v), "sum": sum, "max": max}[agg](vals)
            out[(b, t, *pix)] = total
    return out, len(windows)


@pytest.mark.parametrize(("border", "score", "agg"), [
    ("cover", "prob", "mean"), ("truncate", "logit", "sum"), ("cover", "log_prob", "max"),
    ("truncate", "prob", "max")])
def test_equals_naive_loop(border, score, agg):
    clf = tiny_clf()
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64)
    ref, n = naive(clf, x, (3, 4), (2, 3), border, score, agg, top_k=2)
    e = Occlusion(window=(3, 4), stride=(2, 3), border=border, score=score,
                  aggregation=agg, batch_size=5).explain(clf, x, Targets(top_k=2))
    torch.testing.assert_close(e.maps, ref, rtol=0, atol=1e-12)
    # N + 1 evaluations, and the default mode's check windows (also run whole)
    assert e.extras["exact_path"]["engine"] == "incremental"
    assert e.cost.forward == n + 1 + e.extras["exact_path"]["check_windows"]
    assert e.native_shape == tuple(e.extras["grid"].shape[2:])


def test_3d_volume_equals_naive_loop():
    clf = mindlens.Classifier(tiny_cnn(dims=3), (6, 7), channels=2)
    x = torch.randn(1, 2, 5, 6, 7, dtype=torch.float64)
    ref, _ = naive(clf, x, (2, 3, 3), (2, 2, 3), "cover", "logit", "mean", top_k=1)
    e = Occlusion(window=(2, 3, 3), stride=(2, 2, 3), score="logit").explain(
        clf, x, Targets())
    assert e.maps.shape == (1, 1, 5, 6, 7)
    torch.testing.assert_close(e.maps, ref, rtol=0, atol=1e-12)


def test_linear_model_exact_values():
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 6, 3)).double()
    clf = mindlens.Classifier(lin, (5, 6), channels=2)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    e = Occlusion(window=1, stride=1, score="logit").explain(clf, x, Targets(target=1))
    w = lin[1].weight[1].view(2, 5, 6)
    torch.testing.assert_close(e.maps[0, 0], (w * x[0]).sum(0).detach(), rtol=0, atol=1e-12)


def test_chunking_invariance_and_null_baseline():
    clf = tiny_clf()
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64)
    maps = [Occlusion(window=3, stride=2, batch_size=bs).explain(clf, x, Targets()).maps
            for bs in (1, 7, 64)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=1e-7)
    torch.testing.assert_close(maps[0], maps[2], rtol=0, atol=1e-7)
    null = Occlusion(window=3, baseline=lambda t: t.clone()).explain(clf, x, Targets())
    assert null.maps.abs().max() < 1e-12  # batched vs. single passes round differently


def test_coverage_under_cover():
    gen = torch.Generator().manual_seed(3)
    for _ in range(200):
        size = int(torch.randint(1, 40, (1,), generator=gen))
        k = int(torch.randint(1, size + 1, (1,), generator=gen))
        s = int(torch.randint(1, 12, (1,), generator=gen))
        starts = window_starts(size, k, s, "cover")
        covered = torch.zeros(size, dtype=torch.bool)
        for st in starts:
            assert st + k <= size
            covered[st : st + k] = True
        assert covered.all() or s > k


def test_baselines_pixel_constant_mean_blur():
    clf = tiny_clf()
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    grey = clf.spec.normalize(torch.full((1, 2, 1, 1), 0.5, dtype=torch.float64))
    a = Occlusion(window=3, baseline=0.5).explain(clf, x, Targets())
    b = Occlusion(window=3, baseline=grey).explain(clf, x, Targets())
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=1e-12)
    mean = x.mean(dim=(2, 3), keepdim=True)
    c = Occlusion(window=3, baseline="mean").explain(clf, x, Targets())
    d = Occlusion(window=3, baseline=mean).explain(clf, x, Targets())
    torch.testing.assert_close(c.maps, d.maps, rtol=0, atol=1e-12)
    blur = Occlusion(window=3, baseline="blur").explain(clf, x, Targets())
    assert torch.isfinite(blur.maps).all() and not torch.equal(blur.maps, c.maps)


def test_bad_input():
    clf = tiny_clf()
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    with pytest.raises(InputError, match="larger than the image"):
        Occlusion(window=10).explain(clf, x, Targets())
    with pytest.raises(InputError, match="stride"):
        Occlusion(window=3, stride=0)
    with pytest.raises(InputError, match="one value per spatial axis"):
        Occlusion(window=(3, 3, 3)).explain(clf, x, Targets())
    with pytest.raises(InputError, match="baseline"):
        Occlusion(baseline="gray")
    with pytest.raises(InputError, match="score"):
        Occlusion(score="margin")


def test_stride_larger_than_window_warns_nan():
    clf = tiny_clf()
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    with pytest.warns(UserWarning, match="covered by no window"):
        e = Occlusion(window=1, stride=3).explain(clf, x, Targets())
    assert torch.isnan(e.maps).any()


def test_model_untouched_also_on_error(resnet20):
    module = resnet20.module
    module.train()
    before = fingerprint(module)
    x = torch.randn(1, 3, 32, 32)
    mindlens.explain(resnet20, x, "occlusion", window=8, stride=8)
    assert_untouched(before, module)

    def bad_score(logits):
        if logits.shape[0] > 1:
            raise RuntimeError("boom")
        return logits[:, 0]

    with pytest.raises(RuntimeError, match="boom"):
        mindlens.explain(resnet20, x, "occlusion", target=bad_score, window=8, stride=8)
    assert_untouched(before, module)
    module.eval()


@pytest.mark.peers
def test_equals_captum_on_resnet20(resnet20):
    """Captum's ``Occlusion`` attributes per input element: the drop ``f(x) - f(x_occ)``
    averaged over the windows (here 3 x k x k, i.e. all channels) that cover the element;
    its windows start at 0, s, ..., ceil((size - k) / s) * s and the last one is cut at the
    border. That is mindlens' ``border="truncate"``, ``aggregation="mean"``; every channel
    of Captum's map then holds the same value, which is our map. Baseline 0 in model space
    = ``baselines=0``; the score is the softmax probability (Captum's forward returns it)."""
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        target = resnet20(x).argmax(1)
    e = Occlusion(window=4, stride=3, border="truncate", score="prob", batch_size=32).explain(
        resnet20, x, Targets(target=target))
    occ = captum_attr.Occlusion(lambda t: resnet20.module(t).softmax(1))
    ref = occ.attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 3, 3), baselines=0,
                        target=target, perturbations_per_eval=32)
    torch.testing.assert_close(ref[:, 1], ref[:, 0])
    scale = ref.abs().max().item()
    assert math.isfinite(scale) and scale > 0
    torch.testing.assert_close(e.maps[:, 0], ref[:, 0], rtol=0, atol=1e-5 * scale)


def test_baseline_sensitivity():
    clf = tiny_clf()
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64)
    out = baseline_sensitivity(clf, x, ["zero", "mean", "blur"], window=3, score="logit")
    assert out["baselines"] == ["zero", "mean", "blur"]
    assert [(p["a"], p["b"]) for p in out["pairs"]] == [
        ("zero", "mean"), ("zero", "blur"), ("mean", "blur")]
    zero, mean = out["explanations"]["zero"].maps, out["explanations"]["mean"].maps
    a = (zero[1, 0] - zero[1, 0].mean()).flatten()
    b = (mean[1, 0] - mean[1, 0].mean()).flatten()
    expected = float(a @ b / (a.norm() * b.norm()))
    assert out["pairs"][0]["pearson"][1][0] == pytest.approx(expected, abs=1e-12)
    same = baseline_sensitivity(clf, x, ["zero", 0.0 * x], window=3)
    assert same["min_pearson"] == pytest.approx(1.0, abs=1e-9)


def test_explanation_saves_and_loads(tmp_path):
    clf = tiny_clf()
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    e = Occlusion(window=3, baseline=lambda t: t.mean() + 0 * t).explain(clf, x, Targets())
    e.save(tmp_path / "occ.pt")
    back = mindlens.Explanation.load(tmp_path / "occ.pt")
    assert torch.equal(back.maps, e.maps) and back.params["baseline"].startswith("callable")
    labels = torch.arange(99).reshape(9, 11) % 4
    a = mindlens.explain(clf, x, "area_occlusion", regions=labels)
    a.save(tmp_path / "area.pt")
    assert mindlens.Explanation.load(tmp_path / "area.pt").extras["regions"] == \
        a.extras["regions"]


class ViewHead(nn.Module):
    """Flattens with ``.view``, which a channels-last activation cannot do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 9 * 11, 4)

    def forward(self, x):
        y = torch.tanh(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


def test_model_that_needs_contiguous_batches_equals_naive_loop():
    clf = mindlens.Classifier(ViewHead().double().eval(), (9, 11), channels=2)
    with pytest.raises(RuntimeError):  # the layout the fast path tries first
        clf.module(torch.randn(2, 2, 9, 11, dtype=torch.float64)
                   .contiguous(memory_format=torch.channels_last))
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    ref, _ = naive(clf, x, (3, 4), (2, 3), "cover", "logit", "mean", top_k=1)
    e = Occlusion(window=(3, 4), stride=(2, 3), score="logit", batch_size=4).explain(
        clf, x, Targets())
    torch.testing.assert_close(e.maps, ref, rtol=0, atol=1e-12)
