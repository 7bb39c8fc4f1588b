"""Grad-CAM and CAM on a Conv3d classifier over volumes [B, C, D, H, W]: CAM = Grad-CAM
times the number of feature-map voxels on GAP + linear heads (float64), the automatic
layer is the last 5-D feature map, the model is left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mindlens

from ..conftest import assert_untouched, fingerprint


def gap_net3d(conv_head: bool = False) -> nn.Module:
    torch.manual_seed(0)
    head: list[nn.Module] = (
        [nn.AdaptiveAvgPool3d(1), nn.Conv3d(6, 3, 1), nn.Flatten()] if conv_head
        else [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 3)])
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv3d(4, 6, 3, stride=2), nn.ReLU(), *head).double()


@pytest.mark.parametrize("conv_head", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_cam_equals_gradcam_times_volume_on_gap_linear_3d(conv_head: bool, relu: bool) -> None:
    clf = mindlens.Classifier(gap_net3d(conv_head), (7, 9, 9), channels=2)
    x = torch.randn(2, 2, 7, 9, 9, dtype=torch.float64)
    before = fingerprint(clf.module)
    cam = mindlens.explain(clf, x, "cam", top_k=2, relu=relu)
    grad = mindlens.explain(clf, x, "gradcam", top_k=2, relu=relu)
    assert_untouched(before, clf.module)
    assert cam.native_shape == grad.native_shape == (3, 4, 4)
    assert cam.params["layer"] == grad.params["layer"] == "3"  # last 5-D map (ReLU)
    assert cam.maps.shape == (2, 2, 7, 9, 9)
    assert torch.equal(cam.targets, grad.targets)
    torch.testing.assert_close(cam.maps, grad.maps * 48, rtol=1e-10, atol=1e-12)
    # at the native resolution, CAM averages to logit - bias
    native = mindlens.explain(clf, x, "cam", top_k=2, layer="3")
    with torch.no_grad():
        logits = clf.module(x)
    assert torch.equal(native.scores, logits.gather(1, native.targets))


def test_gradcam_3d_by_definition_and_untouched_after_an_error() -> None:
    clf = mindlens.Classifier(gap_net3d(), (7, 9, 9), channels=2)
    x = torch.randn(1, 2, 7, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "gradcam", target=1, relu=False, layer="2")
    A = clf.module[:3](x).detach().requires_grad_(True)
    score = clf.module[3:](A)[0, 1]
    (g,) = torch.autograd.grad(score, A)
    want = (g.mean(dim=(2, 3, 4))[:, :, None, None, None] * A).sum(1)
    want = torch.nn.functional.interpolate(want[:, None].detach(), size=(7, 9, 9),
                                           mode="trilinear", align_corners=False)
    torch.testing.assert_close(e.maps, want, rtol=1e-10, atol=1e-12)
    before = fingerprint(clf.module)
    with pytest.raises(mindlens.ModelError, match="not a spatial feature map"):
        mindlens.explain(clf, x, "gradcam", layer="5")  # the flattened output
    assert_untouched(before, clf.module)


def test_guided_gradcam_3d_reduces_the_channel_axis() -> None:
    clf = mindlens.Classifier(gap_net3d(), (7, 9, 9), channels=2)
    x = torch.randn(1, 2, 7, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "guided_gradcam")
    assert e.raw.shape == (1, 1, 2, 7, 9, 9) and e.maps.shape == (1, 1, 7, 9, 9)
    torch.testing.assert_close(e.maps, e.raw.abs().amax(dim=2))
