"""CAM, Grad-CAM and Guided Grad-CAM (spec section 7): CAM = Grad-CAM up to a positive scale
on GAP + linear heads, Grad-CAM against Captum and pytorch-grad-cam on real models, Guided
Grad-CAM as the product of its two factors, top-k from one forward pass."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens

ASSET_LAYERS = [("cifar10_resnet20", "layer3", "resnet20"),
                ("mobilenet_v2", "features", "mobilenet_v2")]


def gap_net(seed: int = 0, conv_head: bool = False) -> nn.Module:
    """conv -> ReLU -> conv -> ReLU -> GAP -> linear (or a 1x1 conv as the linear layer)."""
    torch.manual_seed(seed)
    head: list[nn.Module] = (
        [nn.AdaptiveAvgPool2d(1), nn.Conv2d(6, 5, 1), nn.Flatten()] if conv_head
        else [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)])
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2),
                         nn.ReLU(), *head).double()


def real_input(clf: mindlens.Classifier, batch: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in model space (one only for the slow 224x224 model)."""
    batch = 1 if clf.input_size[0] > 64 else batch
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=gen)
    px = F.interpolate(coarse, size=clf.input_size, mode="bilinear", align_corners=False)
    return clf.spec.normalize(px)


@pytest.mark.parametrize("conv_head", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_cam_equals_gradcam_times_area_on_gap_linear(conv_head: bool, relu: bool) -> None:
    clf = mindlens.Classifier(gap_net(conv_head=conv_head), (9, 9))
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    cam = mindlens.explain(clf, x, "cam", top_k=3, relu=relu)
    grad = mindlens.explain(clf, x, "gradcam", top_k=3, relu=relu)
    assert cam.native_shape == grad.native_shape == (4, 4)
    assert torch.equal(cam.targets, grad.targets)
    torch.testing.assert_close(cam.maps, grad.maps * 16, rtol=1e-10, atol=1e-12)
    assert cam.signed != relu and grad.signed != relu
    # CAM is an exact split of the logit: mean over the native map + bias = logit
    native = mindlens.explain(clf, x, "cam", top_k=3, layer="3")
    with torch.no_grad():
        logits = clf.module(x)
    assert native.params["layer"] == "3"
    assert native.extras["bias"].shape == (3, 3)
    assert cam.cost.forward == 1 and cam.cost.backward == 0
    assert torch.equal(native.scores, logits.gather(1, native.targets))


@pytest.mark.parametrize("name,layer,fixture", ASSET_LAYERS)
def test_cam_equals_gradcam_on_asset_models(name: str, layer: str, fixture: str,
                                            request: pytest.FixtureRequest) -> None:
    clf = request.getfixturevalue(fixture)
    x = real_input(clf, 2)
    cam = mindlens.explain(clf, x, "cam", top_k=2, relu=True)
    grad = mindlens.explain(clf, x, "gradcam", top_k=2)
    assert cam.params["layer"] == grad.params["layer"] == layer
    area = grad.native_shape[0] * grad.native_shape[1]
    scale = float(cam.maps.abs().max())
    torch.testing.assert_close(grad.maps * area, cam.maps, rtol=0, atol=1e-5 * scale)


def test_cam_refuses_a_head_that_is_not_gap_linear(lenet: mindlens.Classifier) -> None:
    with pytest.raises(mindlens.NotApplicableError, match="gradcam"):
        mindlens.explain(lenet, torch.zeros(1, 3, 32, 32), "cam")
    torch.manual_seed(0)  # GAP -> hidden linear -> ReLU -> linear: shapes fit, values do not
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5))
    with pytest.raises(mindlens.NotApplicableError, match="gradcam"):
        mindlens.explain(mindlens.Classifier(net, (8, 8)), torch.randn(2, 3, 8, 8), "cam")


def test_gradcam_matches_a_by_definition_computation() -> None:
    net = gap_net()
    hidden = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 5))
    net = nn.Sequential(*list(net)[:4], hidden.double())  # not GAP: a dense head
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "gradcam", target=[1, 3], layer="3", relu=False)
    A = net[:4](x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net[4](A)[[0, 1], [1, 3]].sum(), A)
    native = (g.mean(dim=(2, 3), keepdim=True) * A).sum(1, keepdim=True).detach()
    ref = F.interpolate(native, size=(9, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(e.maps, ref, rtol=1e-12, atol=1e-12)
    assert e.signed and e.native_shape == (4, 4)


@pytest.mark.parametrize("name,layer,fixture", ASSET_LAYERS)
def test_gradcam_equals_captum_layergradcam(name: str, layer: str, fixture: str,
                                            request: pytest.FixtureRequest) -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    clf = request.getfixturevalue(fixture)
    x = real_input(clf, 2, seed=1)
    ours = mindlens.explain(clf, x, "gradcam", layer=layer, top_k=1)
    model = copy.deepcopy(clf.module)
    peer = LayerGradCam(model, model.get_submodule(layer))
    target = ours.targets[:, 0] + clf.logit_offset
    theirs = peer.attribute(x, target=target, relu_attributions=True)
    theirs = LayerAttribution.interpolate(theirs, tuple(x.shape[2:]), interpolate_mode="bilinear")
    theirs = theirs.detach()[:, 0]
    peak = float(theirs.amax())
    assert peak > 0
    torch.testing.assert_close(ours.maps[:, 0], theirs, rtol=0, atol=1e-5 * peak)


@pytest.mark.parametrize("name,layer,fixture", ASSET_LAYERS)
def test_gradcam_equals_pytorch_grad_cam(name: str, layer: str, fixture: str,
                                         request: pytest.FixtureRequest, torchvision_stub,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-grad-cam min-max scales and resizes with cv2; its map is compared before
    that step (its ``scale_cam_image`` replaced by the identity) and upsampled like ours."""
    import pytorch_grad_cam.base_cam as base_cam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    clf = request.getfixturevalue(fixture)
    x = real_input(clf, 2, seed=2)
    ours = mindlens.explain(clf, x, "gradcam", layer=layer, top_k=1)
    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model = copy.deepcopy(clf.module)
    targets = [ClassifierOutputTarget(int(c) + clf.logit_offset) for c in ours.targets[:, 0]]
    with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as peer:
        native = torch.from_numpy(peer(input_tensor=x, targets=targets)).double()
    assert tuple(native.shape[1:]) == ours.native_shape
    theirs = F.interpolate(native[:, None], size=tuple(x.shape[2:]), mode="bilinear",
                           align_corners=False)[:, 0]
    peak = float(theirs.amax())
    assert peak > 0
    torch.testing.assert_close(ours.maps[:, 0].double(), theirs, rtol=0, atol=1e-5 * peak)


def test_guided_gradcam_single_pass_is_the_product(resnet20: mindlens.Classifier) -> None:
    x = real_input(resnet20, 2, seed=3)
    ggc = mindlens.explain(resnet20, x, "guided_gradcam", top_k=2)
    assert ggc.extras["single_pass"] is True
    assert ggc.cost.forward == 1 and ggc.cost.backward == 2
    gbp = mindlens.explain(resnet20, x, "guided_backprop", top_k=2)
    cam = mindlens.explain(resnet20, x, "gradcam", top_k=2)
    assert torch.equal(ggc.targets, gbp.targets) and torch.equal(ggc.targets, cam.targets)
    expected = gbp.raw * cam.maps[:, :, None]
    scale = float(expected.abs().max())
    torch.testing.assert_close(ggc.raw, expected, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(ggc.extras["gradcam"], cam.maps, rtol=0,
                               atol=1e-5 * float(cam.maps.max()))
    torch.testing.assert_close(ggc.maps, expected.abs().amax(dim=2), rtol=0, atol=1e-5 * scale)


def test_guided_gradcam_two_pass_is_the_product(lenet: mindlens.Classifier) -> None:
    x = real_input(lenet, 3, seed=4)
    ggc = mindlens.explain(lenet, x, "guided_gradcam", top_k=2, reduction="sum")
    assert ggc.extras["single_pass"] is False  # ReLUs in the dense head
    assert ggc.params["layer"] == "conv2"
    gbp = mindlens.explain(lenet, x, "guided_backprop", top_k=2, reduction="sum")
    cam = mindlens.explain(lenet, x, "gradcam", top_k=2)
    expected = gbp.raw * cam.maps[:, :, None]
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(ggc.raw, expected, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(ggc.maps, expected.sum(dim=2), rtol=0, atol=1e-6 * scale)


def test_guided_gradcam_equals_captum(lenet: mindlens.Classifier) -> None:
    from captum.attr import GuidedGradCam

    x = real_input(lenet, 2, seed=5)
    ours = mindlens.explain(lenet, x, "guided_gradcam", layer="conv2", target=[3, 5])
    twin = copy.deepcopy(lenet.module)  # Captum needs nn.ReLU modules: rewrite the forward
    relus = [nn.ReLU() for _ in range(4)]

    def forward(t: torch.Tensor) -> torch.Tensor:
        t = F.max_pool2d(relus[0](twin.conv1(t)), 2)
        t = F.max_pool2d(relus[1](twin.conv2(t)), 2)
        return twin.fc3(relus[3](twin.fc2(relus[2](twin.fc1(t.flatten(1))))))

    twin.forward = forward  # type: ignore[method-assign]
    twin.relus = nn.ModuleList(relus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = GuidedGradCam(twin, twin.conv2).attribute(
            x.clone(), target=torch.tensor([3, 5]), interpolate_mode="bilinear").detach()
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours.raw[:, 0], theirs, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["gradcam", "cam", "guided_gradcam"])
def test_top_k_equals_per_class_runs_with_one_forward(method: str) -> None:
    inner = gap_net()
    calls = []
    net = nn.Sequential(inner)
    net.register_forward_pre_hook(lambda m, i: calls.append(1))
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    clf.layer("auto", example=x[:1])  # resolve (and cache) the layer first
    calls.clear()
    top = mindlens.explain(clf, x, method, top_k=3)
    assert len(calls) == 1 and top.cost.forward == 1
    assert top.cost.backward == (0 if method == "cam" else 3)
    for t in range(3):
        one = mindlens.explain(clf, x, method, target=top.targets[:, t].tolist())
        torch.testing.assert_close(one.maps[:, 0], top.maps[:, t], rtol=1e-12, atol=1e-14)
        if method == "guided_gradcam":
            torch.testing.assert_close(one.raw[:, 0], top.raw[:, t], rtol=1e-12, atol=1e-14)


def test_gradcam_layer_errors(resnet20: mindlens.Classifier) -> None:
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(mindlens.InputError, match="no layer named 'layer9'"):
        mindlens.explain(resnet20, x, "gradcam", layer="layer9")
    with pytest.raises(mindlens.ModelError, match="not a spatial feature map"):
        mindlens.explain(resnet20, x, "gradcam", layer="linear")


def test_reused_layer_is_refused() -> None:
    torch.manual_seed(0)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    clf = mindlens.Classifier(Twice(), (6, 6))
    with pytest.raises(mindlens.ModelError, match="more than once"):
        mindlens.explain(clf, torch.randn(1, 3, 6, 6), "gradcam", layer="conv")


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam", "cam"])
def test_layer_followed_by_inplace_relu(method: str) -> None:
    """The captured feature map must not be rectified by an in-place ReLU that follows the
    layer (pytorch-grad-cam gets this wrong, see bench/peers-baseline.md)."""
    maps = []
    for inplace in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3),
                            nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(6, 5)).double()
        clf = mindlens.Classifier(net, (9, 9))
        x = torch.randn(2, 3, 9, 9, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
        e = mindlens.explain(clf, x, method, layer="2", target=[0, 3], relu=False)
        maps.append(e.raw if e.raw is not None else e.maps)
    assert (maps[0] < 0).any()  # the conv output has negative parts to lose
    assert torch.equal(maps[0], maps[1])


def test_guided_gradcam_two_pass_path_takes_a_callable_target(lenet):
    """A dense head (ReLUs after the layer) takes the two-pass path; a callable target must
    reach both passes, not only the Grad-CAM one."""
    x = real_input(lenet, 2, seed=6)

    def score(logits):
        return logits[:, 3] - logits[:, 5]

    e = mindlens.explain(lenet, x, "guided_gradcam", target=score)
    assert not e.extras["single_pass"]
    grad = mindlens.explain(lenet, x, "gradcam", target=score)
    gbp = mindlens.explain(lenet, x, "guided_backprop", target=score, reduction="sum")
    torch.testing.assert_close(e.extras["gradcam"], grad.maps)
    torch.testing.assert_close(e.raw, gbp.raw * grad.maps[:, :, None])
    torch.testing.assert_close(e.scores, grad.scores)
