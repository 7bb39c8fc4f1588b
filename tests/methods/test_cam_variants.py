"""Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM and Eigen-CAM (spec methods-more.md section
17): the closed forms on a GAP + linear head, the conservation identities on a homogeneous
head, zero gradients, Eigen-CAM on rank-one activations, and pytorch-grad-cam 1.5.7 on the
real asset models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens

from .test_cam import real_input

GRADIENT_VARIANTS = ["gradcam_pp", "xgradcam", "layercam", "hirescam"]
# (asset, layer, fixture): resnet20's last stage (post-ReLU, 8x8), mobilenet_v2's features
# (ReLU6 modules, 7x7), LeNet's conv2 (signed, before a functional ReLU, 10x10)
ASSETS = [("cifar10_resnet20", "layer3", "resnet20"), ("mobilenet_v2", "features",
                                                        "mobilenet_v2"),
          ("cifar10_lenet", "conv2", "lenet")]


def small_input(clf: mindlens.Classifier, seed: int, size: int = 96) -> torch.Tensor:
    """Two images (one for mobilenet_v2, at ``size`` px: features 3x3 at 96, 1280
    channels), so that the peer checks stay quick; they check the method, not the
    resolution."""
    x = real_input(clf, 2, seed=seed)
    if clf.input_size[0] > 64:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def gap_linear(seed: int = 0, zero_head: bool = False) -> nn.Module:
    """conv -> ReLU -> conv(stride 2) -> ReLU [layer "3", 4x4] -> GAP -> linear."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    if zero_head:
        with torch.no_grad():
            net[-1].weight.zero_()
    return net.double()


@pytest.mark.parametrize("relu", [False, True])
def test_closed_forms_on_a_gap_linear_head(relu: bool) -> None:
    net = gap_linear()
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    A = net[:4](x).detach()  # [3, 6, 4, 4]
    u = net[-1].weight.detach()  # [5, 6]
    e = {m: mindlens.explain(clf, x, m, top_k=2, layer="3", relu=relu)
         for m in ["gradcam", "xgradcam", "hirescam", "layercam", "gradcam_pp"]}
    classes = e["gradcam"].targets
    uv = 16
    g = u[classes] / uv  # [B, T, K]: the gradient is constant over the locations
    total = A.flatten(2).sum(2)[:, None]  # [B, 1, K]
    weights = {"gradcam": g, "xgradcam": g, "hirescam": g, "layercam": g.clamp_min(0),
               "gradcam_pp": uv * g.clamp_min(0) / (2 + total * g)}
    for m, w in weights.items():
        assert torch.equal(e[m].targets, classes)
        ref = torch.einsum("btk,bkhw->bthw", w, A)
        ref = ref.clamp_min(0) if relu else ref
        ref = F.interpolate(ref, size=(9, 9), mode="bilinear", align_corners=False)
        torch.testing.assert_close(e[m].maps, ref, rtol=1e-10, atol=1e-12, msg=m)
        assert e[m].native_shape == (4, 4) and e[m].cost.backward == 2


@pytest.mark.parametrize("method", ["xgradcam", "hirescam"])
def test_raw_map_sums_to_the_score_on_a_homogeneous_head(method: str) -> None:
    """Bias-free conv -> ReLU -> GAP -> linear after an 8x8 layer on an 8x8 input (no
    resampling): the raw map sums to the logit (Euler's theorem)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3, bias=False)
                        ).double()
    clf = mindlens.Classifier(net, (8, 8))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    e = mindlens.explain(clf, x, method, top_k=3, layer="1")
    assert e.native_shape == (8, 8) and e.signed
    torch.testing.assert_close(e.maps.sum(dim=(2, 3)), e.scores, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", GRADIENT_VARIANTS)
def test_zero_gradients_give_zero_maps(method: str) -> None:
    clf = mindlens.Classifier(gap_linear(zero_head=True), (9, 9))
    e = mindlens.explain(clf, torch.randn(2, 3, 9, 9, dtype=torch.float64), method, target=1)
    assert not e.maps.isnan().any()
    assert torch.equal(e.maps, torch.zeros_like(e.maps))


def test_gradcam_pp_warns_on_negative_denominators() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Flatten(), nn.Linear(6 * 7 * 7, 4)).double()
    clf = mindlens.Classifier(net, (9, 9))
    with pytest.warns(UserWarning, match="negative denominators"):
        mindlens.explain(clf, 50 * torch.randn(4, 3, 9, 9, dtype=torch.float64),
                         "gradcam_pp", top_k=4, layer="0")


def test_bad_parameters_are_refused() -> None:
    clf = mindlens.Classifier(gap_linear(), (9, 9))
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    with pytest.raises(mindlens.InputError, match="eps_additive"):
        mindlens.explain(clf, x, "gradcam_pp", eps_additive=-1)
    with pytest.raises(mindlens.InputError, match="sign must be one of"):
        mindlens.explain(clf, x, "eigencam", sign="up")


class RankOne(nn.Module):
    """A layer whose output is ``a_k * m`` for a fixed pattern ``m`` (from the input)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a[None, :, None, None] * x[:, :1]


def test_eigencam_on_rank_one_activations_is_the_centred_pattern() -> None:
    a = torch.tensor([0.5, -0.2, 1.0, 0.3], dtype=torch.float64)
    torch.manual_seed(0)
    net = nn.Sequential(RankOne(a), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).double()
    clf = mindlens.Classifier(net, (6, 6))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    e = mindlens.explain(clf, x, "eigencam", top_k=3, layer="0")
    m = x[:, 0]
    centred = m - m.mean(dim=(1, 2), keepdim=True)
    for b in range(2):
        factor = (e.maps[b, 0] * centred[b]).sum() / centred[b].pow(2).sum()
        assert factor > 0
        torch.testing.assert_close(e.maps[b, 0], factor * centred[b], rtol=1e-9, atol=1e-12)
        for t in range(3):  # the same map for every target
            assert torch.equal(e.maps[b, t], e.maps[b, 0])
    torch.testing.assert_close(e.extras["explained_variance"], torch.ones(2, dtype=torch.float64))
    assert e.extras["class_specific"] is False and e.cost.backward == 0
    # channel order does not matter
    perm = torch.tensor([2, 0, 3, 1])
    net2 = nn.Sequential(RankOne(a[perm]), *list(net)[1:])
    e2 = mindlens.explain(mindlens.Classifier(net2, (6, 6)), x, "eigencam", top_k=3, layer="0")
    torch.testing.assert_close(e2.maps, e.maps, rtol=1e-9, atol=1e-12)


def test_pgc_post_processing_identity() -> None:
    """minmax(resize(minmax(relu(M)))) == minmax(resize(relu(M))) (spec 17.1, used when
    comparing with pytorch-grad-cam before its min-max)."""
    torch.manual_seed(0)
    M = torch.randn(4, 1, 7, 7, dtype=torch.float64)

    def minmax(t: torch.Tensor) -> torch.Tensor:
        lo = t.amin(dim=(2, 3), keepdim=True)
        return (t - lo) / (1e-7 + (t - lo).amax(dim=(2, 3), keepdim=True))

    def resize(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)

    torch.testing.assert_close(minmax(resize(minmax(M.clamp_min(0)))),
                               minmax(resize(M.clamp_min(0))), rtol=0, atol=1e-6)


# -- pytorch-grad-cam 1.5.7 ------------------------------------------------------------
# The peer: ``Class(model=deepcopy, target_layers=[the same layer])`` called with
# ``ClassifierOutputTarget(class + logit_offset)`` per image, aug_smooth=False,
# eigen_smooth=False; its ``scale_cam_image`` (min-max + cv2 resize) is replaced by the
# identity, so it returns ReLU(M) at the layer's resolution, which the test upsamples as
# mindlens does (bilinear, align_corners=False). mindlens runs with the pgc-compatible
# parameters of spec 17.9.
PGC = {
    "gradcam_pp": ("GradCAMPlusPlus", {"eps_additive": 1e-6}),
    "xgradcam": ("XGradCAM", {"eps_additive": 1e-7, "relu": True}),
    "layercam": ("LayerCAM", {}),
    "hirescam": ("HiResCAM", {"relu": True}),
}


def pgc_native(cls_name: str, clf: mindlens.Classifier, layer: str, x: torch.Tensor,
               classes: torch.Tensor, monkeypatch: pytest.MonkeyPatch, **init) -> torch.Tensor:
    import pytorch_grad_cam
    import pytorch_grad_cam.base_cam as base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    monkeypatch.setattr(base_cam, "scale_cam_image", lambda cam, target_size=None: cam)
    model = copy.deepcopy(clf.module)
    targets = [ClassifierOutputTarget(int(c) + clf.logit_offset) for c in classes]
    score_batch = init.pop("batch_size") if cls_name == "ScoreCAM" else None
    with getattr(pytorch_grad_cam, cls_name)(model=model, target_layers=[
            model.get_submodule(layer)], **init) as peer:
        if score_batch is not None:  # ScoreCAM reads it as an attribute
            peer.batch_size = score_batch
        out = peer(input_tensor=x, targets=targets, aug_smooth=False, eigen_smooth=False)
    return torch.from_numpy(out).double()


def upsampled(native_map: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(native_map[:, None], size=size, mode="bilinear",
                         align_corners=False)[:, 0]


@pytest.mark.parametrize("asset,layer,fixture", ASSETS)
@pytest.mark.parametrize("method", GRADIENT_VARIANTS)
def test_gradient_variants_equal_pytorch_grad_cam(
        method: str, asset: str, layer: str, fixture: str, request: pytest.FixtureRequest,
        torchvision_stub, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    clf = request.getfixturevalue(fixture)
    x = small_input(clf, 4)
    cls_name, compat = PGC[method]
    ours = mindlens.explain(clf, x, method, layer=layer, top_k=1, **compat)
    theirs = pgc_native(cls_name, clf, layer, x, ours.targets[:, 0], monkeypatch)
    assert tuple(theirs.shape[1:]) == ours.native_shape
    theirs = upsampled(theirs, tuple(x.shape[2:]))
    peak = float(theirs.amax())
    assert peak > 0
    torch.testing.assert_close(ours.maps[:, 0].double(), theirs, rtol=0, atol=1e-5 * peak)


def test_gradcam_pp_without_the_additive_constant_differs_from_pgc(
        resnet20: mindlens.Classifier, torchvision_stub, monkeypatch, one_thread) -> None:
    """pgc's +1e-6 matters at resnet20's layer3 (a documented divergence, spec 17.10)."""
    x = real_input(resnet20, 2, seed=4)
    ours = mindlens.explain(resnet20, x, "gradcam_pp", layer="layer3", top_k=1)
    theirs = upsampled(pgc_native("GradCAMPlusPlus", resnet20, "layer3", x,
                                  ours.targets[:, 0], monkeypatch), (32, 32))
    assert (ours.maps[:, 0].double() - theirs).abs().max() > 1e-3 * theirs.amax()


@pytest.mark.parametrize("asset,layer,fixture", ASSETS)
def test_eigencam_equals_pytorch_grad_cam_up_to_sign(
        asset: str, layer: str, fixture: str, request: pytest.FixtureRequest,
        torchvision_stub, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    """pgc: ``EigenCAM`` (targets ignored) returns ReLU of ``get_2d_projection`` (its own
    function, centred activations, NumPy SVD); which sign the solver returns is arbitrary,
    so the projection is compared up to sign, and mindlens's ``relu=True`` map must equal
    pgc's ReLU of the projection with the sign mindlens chose."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    clf = request.getfixturevalue(fixture)
    x = small_input(clf, 5)
    ours = mindlens.explain(clf, x, "eigencam", layer=layer, relu=True)
    raw = mindlens.explain(clf, x, "eigencam", layer=layer).maps[:, 0].double()
    theirs = pgc_native("EigenCAM", clf, layer, x, ours.targets[:, 0], monkeypatch)
    model = copy.deepcopy(clf.module)
    acts = []
    handle = model.get_submodule(layer).register_forward_hook(
        lambda m, i, o: acts.append(o.detach().numpy()))
    with torch.no_grad():
        model(x)
    handle.remove()
    proj = torch.from_numpy(get_2d_projection(acts[0])).double()
    torch.testing.assert_close(theirs, proj.clamp_min(0), rtol=0, atol=1e-6)
    size = tuple(x.shape[2:])
    for b in range(x.shape[0]):
        # the raw map's sign tells which sign mindlens chose (upsampling commutes with it)
        up = [upsampled(s * proj[b:b + 1], size)[0] for s in (1, -1)]
        pick = 0 if (raw[b] - up[0]).abs().max() < (raw[b] - up[1]).abs().max() else 1
        peak = float(up[pick].abs().max())
        torch.testing.assert_close(raw[b], up[pick], rtol=0, atol=1e-4 * peak)
        ours_relu = ours.maps[b, 0].double()
        ref = F.interpolate((proj[b:b + 1] * (1 if pick == 0 else -1)).clamp_min(0)[:, None],
                            size=size, mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(ours_relu, ref, rtol=0, atol=1e-4 * float(ref.amax()))
