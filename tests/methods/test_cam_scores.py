"""Score-CAM and Ablation-CAM (spec methods-more.md sections 17.7, 17.8, 17.13 items 5-6):
by-definition computations on small float64 nets, batch-size invariance, constant
channels, the preview mode's measured error, and pytorch-grad-cam 1.5.7 on real models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens

from .test_cam_variants import gap_linear, pgc_native, small_input, upsampled


def small_net(seed: int = 0, constant_channel: bool = False) -> nn.Module:
    """conv -> ReLU -> conv(stride 2) -> ReLU [layer "3", 6 channels, 4x4] -> GAP -> linear;
    optionally channel 0 of the layer is the constant 0.5 (zero weights, bias 0.5)."""
    net = gap_linear(seed)
    if constant_channel:
        with torch.no_grad():
            net[2].weight[0].zero_()
            net[2].bias[0] = 0.5
    return net


def by_definition_scorecam(net: nn.Module, x: torch.Tensor, classes: torch.Tensor, *,
                           align_corners: bool, score: str) -> torch.Tensor:
    """Channel scores ``[B, K]``: each upsampled, min-max scaled channel masks the input."""
    A = net[:4](x).detach()
    up = F.interpolate(A, size=tuple(x.shape[2:]), mode="bilinear",
                       align_corners=align_corners)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    masks = (up - lo) / (hi - lo + 1e-8)
    out = torch.empty(A.shape[:2], dtype=x.dtype)
    with torch.no_grad():
        for b in range(x.shape[0]):
            logits = net(x[b:b + 1] * masks[b][:, None])
            vals = logits.softmax(1) if score == "prob" else logits
            out[b] = vals[:, classes[b]]
    return out


def test_scorecam_default_is_softmax_over_channels_of_logits() -> None:
    net = small_net()
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "scorecam", layer="3", relu=False)
    s = by_definition_scorecam(net, x, e.targets[:, 0], align_corners=True, score="logit")
    w = s.softmax(dim=1)
    torch.testing.assert_close(e.extras["weights"][:, 0], w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(e.extras["weights"].sum(dim=2), torch.ones(3, 1,
                                                                          dtype=torch.float64))
    A = net[:4](x).detach()
    ref = F.interpolate(torch.einsum("bk,bkhw->bhw", w, A)[:, None], size=(9, 9),
                        mode="bilinear", align_corners=False)
    torch.testing.assert_close(e.maps, ref, rtol=1e-10, atol=1e-12)
    assert e.cost.forward == 1 + 1 + 3 * 6 - sum(e.extras["constant_channels"])
    assert e.cost.backward == 0


def test_scorecam_authors_configuration() -> None:
    """The authors' code: align_corners=False, softmax probabilities as scores, the
    scores themselves as weights, the map combined at input resolution, then ReLU."""
    net = small_net(1)
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "scorecam", layer="3", align_corners=False, score="prob",
                         weights="score", constant_channels="skip", map_resolution="input")
    s = by_definition_scorecam(net, x, e.targets[:, 0], align_corners=False, score="prob")
    A = net[:4](x).detach()
    up = F.interpolate(A, size=(9, 9), mode="bilinear", align_corners=False)
    ref = torch.einsum("bk,bkhw->bhw", s, up).clamp_min(0)[:, None]
    torch.testing.assert_close(e.maps, ref, rtol=1e-10, atol=1e-12)


def test_scorecam_one_channel_layer_gives_that_channel() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(1, 3)).double()
    clf = mindlens.Classifier(net, (6, 6))
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    e = mindlens.explain(clf, x, "scorecam", top_k=2, layer="0", relu=False)
    with torch.no_grad():
        A = net[0](x)
    torch.testing.assert_close(e.maps, A.expand(-1, 2, -1, -1), rtol=1e-12, atol=1e-12)


def test_scorecam_batch_size_does_not_change_the_map() -> None:
    clf = mindlens.Classifier(small_net(2), (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    maps = [mindlens.explain(clf, x, "scorecam", top_k=2, layer="3", batch_size=n).maps
            for n in (1, 5, 6)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("how", ["zero_mask", "skip"])
def test_scorecam_constant_channel(how: str) -> None:
    net = small_net(3, constant_channel=True)
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "scorecam", layer="3", constant_channels=how, relu=False)
    assert e.extras["constant_channels"] == [1, 1]
    assert e.cost.forward == 1 + 1 + 2 * 5  # the constant channel is never run per image
    s = by_definition_scorecam(net, x, e.targets[:, 0], align_corners=True, score="logit")
    with torch.no_grad():
        zero = net(torch.zeros(1, 3, 9, 9, dtype=torch.float64))[0, e.targets[:, 0]]
    s[:, 0] = zero  # the all-zero mask: the zero image
    if how == "skip":
        s[:, 0] = float("-inf")
    w = s.softmax(dim=1)
    torch.testing.assert_close(e.extras["weights"][:, 0], w, rtol=1e-10, atol=1e-12)


def test_scorecam_preview_scores_top_channels_and_measures_its_error() -> None:
    net = small_net(4)
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    full = mindlens.explain(clf, x, "scorecam", layer="3", weights="score", relu=False)
    same = mindlens.explain(clf, x, "scorecam", layer="3", weights="score", relu=False,
                            top_channels=6)
    torch.testing.assert_close(same.maps, full.maps, rtol=1e-12, atol=1e-14)
    e = mindlens.explain(clf, x, "scorecam", layer="3", weights="score", relu=False,
                         top_channels=2, check_channels=2)
    info = e.extras["preview"]
    assert info["top_channels"] == 2 and info["check_channels"] == 4
    assert e.cost.backward == 1 and e.cost.forward == 1 + 1 + 2 * 4
    with torch.no_grad():
        zero = net(torch.zeros(1, 3, 9, 9, dtype=torch.float64))[0, e.targets[:, 0]]
    w_full, w = full.extras["weights"][:, 0], e.extras["weights"][:, 0]
    guessed = torch.isclose(w, zero[:, None].expand_as(w), rtol=0, atol=1e-14) & \
        ~torch.isclose(w_full, w, rtol=0, atol=1e-14)
    exact = ~guessed
    assert int(exact.sum()) >= 8 and int(guessed.sum()) > 0
    torch.testing.assert_close(w[exact], w_full[exact], rtol=1e-12, atol=1e-14)
    # the reported error is the true error of the guess at the check channels, at most the
    # true error over all guessed channels (a sample, not a bound)
    true_err = (w_full - zero[:, None]).abs()
    assert info["max_abs_score_error"] <= float(true_err.max()) + 1e-12
    assert info["max_abs_score_error"] > 0
    assert any(abs(info["max_abs_score_error"] - float(v)) < 1e-12 for v in true_err[exact])


def test_scorecam_refuses_bad_parameters() -> None:
    clf = mindlens.Classifier(small_net(), (9, 9))
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    for kw, match in (({"weights": "mean"}, "weights must be"),
                      ({"batch_size": 0}, "batch_size"),
                      ({"top_channels": -2}, "top_channels")):
        with pytest.raises(mindlens.InputError, match=match):
            mindlens.explain(clf, x, "scorecam", **kw)
    with pytest.raises(mindlens.InputError, match="callable target"):
        mindlens.explain(clf, x, "scorecam", target=lambda z: z[:, 0], score="prob")


# -- Ablation-CAM --------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [True, False])
def test_ablationcam_closed_form_on_a_gap_linear_head(normalize: bool) -> None:
    net = gap_linear(5)
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "ablationcam", top_k=2, layer="3", relu=False,
                         normalize_by_score=normalize, batch_size=4)
    A = net[:4](x).detach()
    u = net[-1].weight.detach()
    drop = u[e.targets] * A.mean(dim=(2, 3))[:, None]  # [B, T, K]
    w = drop / e.scores[:, :, None] if normalize else drop
    torch.testing.assert_close(e.extras["weights"], w, rtol=1e-10, atol=1e-12)
    ref = F.interpolate(torch.einsum("btk,bkhw->bthw", w, A), size=(9, 9), mode="bilinear",
                        align_corners=False)
    torch.testing.assert_close(e.maps, ref, rtol=1e-10, atol=1e-12)
    assert e.extras["shared_prefix"] is True
    batches = [mindlens.explain(clf, x, "ablationcam", top_k=2, layer="3", batch_size=n).maps
               for n in (1, 6)]
    torch.testing.assert_close(batches[0], batches[1], rtol=1e-12, atol=1e-14)


class BatchFromInput(nn.Module):
    """Reshapes with the batch size read from the input: it cannot take more rows after
    the layer than it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.features = gap_linear(6)[:4]
        self.fc = nn.Linear(6 * 16, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return self.fc(self.features(x).reshape(n, -1))


def test_ablationcam_falls_back_when_the_model_needs_equal_batches() -> None:
    net = BatchFromInput()
    clf = mindlens.Classifier(net, (9, 9))
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    e = mindlens.explain(clf, x, "ablationcam", layer="features.3", relu=False,
                         normalize_by_score=False, ablation_value=-1.0)
    assert e.extras["shared_prefix"] is False
    A = net.features(x).detach()
    with torch.no_grad():
        for k in (0, 5):
            Ak = A.clone()
            Ak[:, k] = -1.0
            drop = e.scores[:, 0] - net.fc(Ak.reshape(2, -1))[torch.arange(2), e.targets[:, 0]]
            torch.testing.assert_close(e.extras["weights"][:, 0, k], drop, rtol=1e-10,
                                       atol=1e-12)


def test_ablationcam_warns_when_dividing_by_a_small_score() -> None:
    clf = mindlens.Classifier(small_net(), (9, 9))
    x = torch.randn(1, 3, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        worst = int(clf.module(x).argmin())
    if float(clf.module(x)[0, worst]) > 0:
        pytest.skip("no negative logit for this seed")
    with pytest.warns(UserWarning, match="normalize_by_score=False"):
        mindlens.explain(clf, x, "ablationcam", target=worst)


# -- pytorch-grad-cam 1.5.7 ------------------------------------------------------------
SCORE_ASSETS = [("cifar10_resnet20", "layer3", "resnet20"),
                ("mobilenet_v2", "features", "mobilenet_v2"), ("cifar10_lenet", "conv2", "lenet")]


@pytest.mark.parametrize("asset,layer,fixture", SCORE_ASSETS)
def test_scorecam_equals_pytorch_grad_cam(asset: str, layer: str, fixture: str,
                                          request: pytest.FixtureRequest, torchvision_stub,
                                          monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    """pgc: ``ScoreCAM(model=deepcopy, target_layers=[layer])`` with ``cam.batch_size =
    16`` set after construction, ``ClassifierOutputTarget(class + logit_offset)``, its
    min-max + cv2 resize replaced by the identity (see test_cam_variants.pgc_native).
    mindlens at its defaults, which are pgc's: align_corners=True upsampling of the masks,
    (a - min) / (max - min + 1e-8), logits, softmax over channels, a constant channel on
    the all-zero mask, the map combined at layer resolution and ReLU'd."""
    clf = request.getfixturevalue(fixture)
    x = small_input(clf, 6, size=64)  # mobilenet_v2: features 2x2, 1280 masked forwards
    ours = mindlens.explain(clf, x, "scorecam", layer=layer)
    theirs = pgc_native("ScoreCAM", clf, layer, x, ours.targets[:, 0], monkeypatch,
                        batch_size=16)
    assert tuple(theirs.shape[1:]) == ours.native_shape
    theirs = upsampled(theirs, tuple(x.shape[2:]))
    peak = float(theirs.amax())
    assert peak > 0
    torch.testing.assert_close(ours.maps[:, 0].double(), theirs, rtol=0, atol=1e-5 * peak)


@pytest.mark.parametrize("asset,layer,fixture", SCORE_ASSETS[:2])
def test_ablationcam_equals_pytorch_grad_cam(asset: str, layer: str, fixture: str,
                                             request: pytest.FixtureRequest, torchvision_stub,
                                             monkeypatch: pytest.MonkeyPatch,
                                             one_thread) -> None:
    """pgc: ``AblationCAM(model=deepcopy, target_layers=[layer], batch_size=32,
    ratio_channels_to_ablate=1.0)``, same targets and identity post-processing as above.
    Both layers are post-ReLU (ReLU / ReLU6), so pgc ablates with 0, as mindlens's
    default ``ablation_value="zero"``; weights (y - y_k) / y, ReLU."""
    clf = request.getfixturevalue(fixture)
    x = small_input(clf, 7)
    ours = mindlens.explain(clf, x, "ablationcam", layer=layer)
    theirs = pgc_native("AblationCAM", clf, layer, x, ours.targets[:, 0], monkeypatch,
                        batch_size=32, ratio_channels_to_ablate=1.0)
    theirs = upsampled(theirs, tuple(x.shape[2:]))
    peak = float(theirs.amax())
    assert peak > 0
    torch.testing.assert_close(ours.maps[:, 0].double(), theirs, rtol=0, atol=1e-5 * peak)


def test_the_new_cams_get_a_criteria_row_from_evaluate(lenet: mindlens.Classifier,
                                                       one_thread) -> None:
    from mindlens.evaluate import evaluate
    from mindlens.metrics.criteria import CRITERIA

    from ..conftest import asset_images

    names = ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
             "ablationcam"]
    x = lenet.preprocess(asset_images("foolbox/cifar10_0[0-1]*.png"))
    table = evaluate(lenet, x, methods=names, steps=4, sensitivity_samples=2,
                     sanity_layers=2, batch_size=2)
    assert [row["method"] for row in table.rows] == names
    for row in table.rows:
        assert row["status"] == "ok", row
        assert set(row["grades"]) == set(CRITERIA)
        assert row["figures"]["native_px_per_cell"] == 32 * 32 / 100  # conv2: 10x10
        assert f"| {row['method']} |" in table.to_markdown()
