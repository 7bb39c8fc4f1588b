"""The Classifier: output contract, layer lookup, TorchScript limits, input spec."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mindlens


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


@pytest.mark.parametrize("net,shape", [
    (nn.Sequential(nn.Conv2d(3, 4, 3)), r"\(2, 4, 6, 6\)"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(0)), r"\(288,\)"),
])
def test_output_must_be_batch_by_classes(net: nn.Module, shape: str) -> None:
    clf = mindlens.Classifier(net, (8, 8))
    for method in ("saliency", "gradcam"):
        with pytest.raises(mindlens.ModelError, match=shape + r".*logits \[B, classes\]"):
            mindlens.explain(clf, torch.randn(2, 3, 8, 8), method, layer="0")


def test_tuple_output_uses_the_first_element_and_offset_drops_logits() -> None:
    class Aux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_net()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.net(x)
            return out, out * 2

    clf = mindlens.Classifier(Aux(), (8, 8), labels=["bg", "a", "b"], logit_offset=1)
    x = torch.randn(2, 3, 8, 8)
    logits = clf(x)
    assert logits.shape == (2, 2)
    assert clf.labels == ["a", "b"] and clf.label(1) == "b" and clf.label(5) == "class 5"
    e = mindlens.explain(clf, x, "cam", top_k=2)
    with torch.no_grad():
        assert torch.equal(e.scores, clf.module.net(x)[:, 1:].gather(1, e.targets))


def test_label_count_mismatch() -> None:
    clf = mindlens.Classifier(small_net(), (8, 8), labels=["a", "b"])
    with pytest.raises(mindlens.ModelError, match=r"3 classes .* 2 labels"):
        clf(torch.randn(1, 3, 8, 8))


def test_layer_lookup(resnet20, mobilenet_v2, lenet) -> None:
    assert resnet20.layer("auto")[0] == "layer3"
    assert mobilenet_v2.layer("auto")[0] == "features"
    assert lenet.layer("auto")[0] == "conv2"
    name, mod = resnet20.layer("layer2.1.conv1")
    assert name == "layer2.1.conv1" and isinstance(mod, nn.Conv2d)
    assert resnet20.layer(mod)[0] == "layer2.1.conv1"
    with pytest.raises(mindlens.InputError, match=r"no layer named 'layer2\.9'.*linear"):
        resnet20.layer("layer2.9")
    with pytest.raises(mindlens.InputError, match="not part of this model"):
        resnet20.layer(nn.Conv2d(1, 1, 1))
    with pytest.raises(mindlens.ModelError, match="no layer that outputs a spatial"):
        mindlens.Classifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (2, 2)).layer()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_hook_based_methods_refuse_torchscript(tmp_path) -> None:
    traced = torch.jit.trace(small_net().eval(), torch.randn(1, 3, 8, 8))
    clf = mindlens.Classifier(traced, (8, 8))
    assert clf.scripted
    x = torch.randn(2, 3, 8, 8)
    for method in ("guided_backprop", "deconvnet", "gradcam", "cam", "guided_gradcam"):
        with pytest.raises(mindlens.NotApplicableError, match="TorchScript"):
            mindlens.explain(clf, x, method)
    e = mindlens.explain(clf, x, "saliency", top_k=2)  # gradients need no hooks
    ref = mindlens.explain(mindlens.Classifier(small_net(), (8, 8)), x, "saliency", top_k=2)
    torch.testing.assert_close(e.raw, ref.raw)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_script_submodule_is_refused_by_guided_methods() -> None:
    torch.manual_seed(0)
    inner = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    net = nn.Sequential(inner, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    clf = mindlens.Classifier(net, (8, 8))
    with pytest.raises(mindlens.NotApplicableError, match="TorchScript"):
        mindlens.explain(clf, torch.randn(1, 3, 8, 8), "guided_backprop")


def test_input_spec_checks_and_round_trip() -> None:
    with pytest.raises(mindlens.InputError, match="std must be positive"):
        mindlens.Classifier(small_net(), (8, 8), std=[0.0])
    with pytest.raises(mindlens.InputError, match="mean has 2 values"):
        mindlens.Classifier(small_net(), (8, 8), mean=[0.1, 0.2])
    with pytest.raises(mindlens.ModelError, match=r"torch\.nn\.Module"):
        mindlens.Classifier(lambda x: x, (8, 8))  # type: ignore[arg-type]
    clf = mindlens.Classifier(small_net(), (8, 8), mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4])
    px = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(clf.spec.denormalize(clf.spec.normalize(px)), px)
    low, _high = clf.spec.bounds(px)
    torch.testing.assert_close(clf.spec.denormalize(low), torch.zeros_like(px))
    shown = clf.display_pixels(clf.spec.normalize(px))
    assert shown.shape == (2, 8, 8, 3) and shown.dtype.name == "uint8"


def test_unknown_method_and_parameter() -> None:
    clf = mindlens.Classifier(small_net(), (8, 8))
    with pytest.raises(mindlens.InputError, match="unknown method 'gradcam\\+\\+'"):
        mindlens.explain(clf, torch.randn(1, 3, 8, 8), "gradcam++")
    with pytest.raises(mindlens.InputError, match="no parameter 'smooth'"):
        mindlens.explain(clf, torch.randn(1, 3, 8, 8), "saliency", smooth=True)
    with pytest.raises(mindlens.InputError, match="reduction must be one of"):
        mindlens.explain(clf, torch.randn(1, 3, 8, 8), "saliency", reduction="mean")
