"""Adebayo et al. 2018 on a real asset model (CIFAR-10 ResNet-20, real CIFAR-10 images):
gradient and Grad-CAM maps decorrelate as layers are randomised from the top, Guided
Backprop's much less; and class discrimination / sensitivity on the same model."""

from __future__ import annotations

import pytest
import torch

from mindlens import metrics
from mindlens.errors import InputError

from ..conftest import assert_untouched, asset_images, fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cifar(resnet20):
    return resnet20.preprocess(asset_images("foolbox/cifar10_0[0-5]*.png"))


@pytest.fixture(scope="module")
def curves(resnet20, cifar):
    before = fingerprint(resnet20.module)
    out = {m: metrics.cascading_randomization(metrics.method_explainer(m), resnet20, cifar)
           for m in ("saliency", "gradcam", "guided_backprop")}
    assert_untouched(before, resnet20.module)
    return out


def test_randomisation_goes_top_down_and_starts_at_one(curves):
    r = curves["saliency"]
    assert r.layers[:3] == ["none", "linear", "layer3.2.conv2"]
    assert r.layers[-1] == "conv1" and len(r.layers) == 21
    for m in curves.values():
        assert torch.allclose(m.spearman_abs[0], torch.ones(6, dtype=torch.float64))
        assert torch.allclose(m.ssim[0], torch.ones(6, dtype=torch.float64))


def test_gradient_and_gradcam_decorrelate_guided_backprop_does_not(curves):
    # mean Spearman (|map|) after randomising the logit layer and the last block's convs
    top = {m: c.spearman_abs[1:4].nanmean().item() for m, c in curves.items()}
    ssim = {m: c.ssim[1:4].nanmean().item() for m, c in curves.items()}
    assert top["saliency"] < 0.5 and top["gradcam"] < 0.5
    assert top["guided_backprop"] > 0.8
    assert ssim["guided_backprop"] > ssim["saliency"] + 0.4
    assert ssim["guided_backprop"] > ssim["gradcam"] + 0.4
    # over the whole cascade Guided Backprop stays the most similar on average
    whole = {m: c.spearman_abs[1:].nanmean().item() for m, c in curves.items()}
    assert whole["guided_backprop"] > max(whole["saliency"], whole["gradcam"]) + 0.2


def test_randomisation_is_seeded(resnet20, cifar):
    explain = metrics.method_explainer("saliency")
    layers = ["layer3.2.conv2", "linear"]
    a = metrics.cascading_randomization(explain, resnet20, cifar[:2], layers=layers, seed=1)
    b = metrics.cascading_randomization(explain, resnet20, cifar[:2], layers=layers, seed=1)
    c = metrics.cascading_randomization(explain, resnet20, cifar[:2], layers=layers, seed=2)
    assert a.layers == ["none", "linear", "layer3.2.conv2"]
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.maps, c.maps)
    with pytest.raises(InputError, match="no layer named"):
        metrics.cascading_randomization(explain, resnet20, cifar[:1], layers=["nope"])


def test_guided_backprop_is_class_insensitive_gradcam_is_not(resnet20, cifar):
    before = fingerprint(resnet20.module)
    gbp = metrics.class_similarity(metrics.method_explainer("guided_backprop"), resnet20, cifar)
    cam = metrics.class_similarity(metrics.method_explainer("gradcam"), resnet20, cifar)
    assert_untouched(before, resnet20.module)
    assert (gbp.classes[:, 0] != gbp.classes[:, 1]).all()
    assert gbp.spearman.mean() > 0.8 and cam.spearman.mean() < 0.6


def test_sensitivity_is_zero_for_an_input_independent_map_and_grows_with_radius(
        resnet20, cifar):
    flat = metrics.sensitivity(lambda clf, x, c: torch.ones(len(x), 32, 32), resnet20,
                               cifar[:2], n_samples=3)
    assert torch.equal(flat.max, torch.zeros(2, dtype=torch.float64))
    explain = metrics.method_explainer("saliency")
    small = metrics.max_sensitivity(explain, resnet20, cifar[:2], radius=0.01, n_samples=3)
    large = metrics.max_sensitivity(explain, resnet20, cifar[:2], radius=0.5, n_samples=3)
    assert (large > small).all()
    avg = metrics.avg_sensitivity(explain, resnet20, cifar[:2], radius=0.5, n_samples=3)
    assert (avg <= large).all()


def test_reused_clean_maps_give_the_same_numbers(resnet20, cifar):
    """What the evaluation passes in (the clean maps it has) changes no number: the
    sensitivity's base, the top-1 maps of class discrimination and input dependence, the
    sanity check's reference and its last step explained alone."""
    explain = metrics.method_explainer("saliency")
    x = cifar[:4]
    classes = resnet20.predict(x).argmax(dim=1)
    maps = explain(resnet20, x, classes)
    calls = []

    def counted(clf, xs, cs):
        calls.append(len(xs))
        return explain(clf, xs, cs)

    a = metrics.sensitivity(explain, resnet20, x, classes, n_samples=2, seed=[1, 2, 3, 4])
    b = metrics.sensitivity(counted, resnet20, x, classes, n_samples=2, seed=[1, 2, 3, 4],
                            base=maps)
    assert calls == [8] and torch.equal(a.samples, b.samples)
    a = metrics.class_similarity(explain, resnet20, x)
    b = metrics.class_similarity(explain, resnet20, x, known=(classes, maps))
    assert torch.equal(a.spearman, b.spearman) and torch.equal(a.ssim, b.ssim)
    a = metrics.input_dependence(explain, resnet20, x)
    b = metrics.input_dependence(explain, resnet20, x, known=(classes, maps))
    assert a.class_index == b.class_index and torch.equal(a.spearman, b.spearman)
    layers = ["layer3.2.conv2", "linear"]
    full = metrics.cascading_randomization(explain, resnet20, x, classes, layers, seed=5)
    calls.clear()
    last = metrics.cascading_randomization(counted, resnet20, x, classes, layers, seed=5,
                                           reference=maps, final_only=True)
    assert calls == [4] and last.layers == ["none", "layer3.2.conv2"]
    assert torch.equal(last.maps[-1], full.maps[-1])
    assert torch.equal(last.spearman_abs[-1], full.spearman_abs[-1])
    with pytest.raises(InputError, match="for 4 image"):
        metrics.sensitivity(explain, resnet20, x, classes, n_samples=1, base=maps[:2])


def test_curves_do_not_depend_on_the_pass_size(resnet20, cifar):
    x = cifar[:3]
    maps = metrics.method_explainer("saliency")(resnet20, x, resnet20.predict(x).argmax(1))
    a = metrics.deletion(resnet20, x, maps, steps=8, chunk=5, seed=[1, 2, 3])
    b = metrics.deletion(resnet20, x, maps, steps=8, seed=[1, 2, 3])
    torch.testing.assert_close(a.curves, b.curves, rtol=1e-5, atol=1e-6)
