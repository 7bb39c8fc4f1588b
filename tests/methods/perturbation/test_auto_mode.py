"""The default occlusion mode ("auto"): the exact map through the incremental engine where
the model allows it, through the whole model (with a note in ``extras["exact_path"]``) where it
does not: TorchScript, black boxes, code the engine cannot run, code that computes
something else on the engine's patched tensors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mindlens
from mindlens.methods.perturbation.occlusion import CHECK_TOLERANCE, Occlusion
from mindlens.targets import Targets

from ...conftest import assert_untouched, fingerprint


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4, 3)

    def features(self, x):
        return F.relu(self.c2(F.relu(self.c1(x))))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@torch.jit.script
def _scripted_gate(y: torch.Tensor) -> torch.Tensor:
    return y * torch.sigmoid(y)


class CallsTorchScript(Small):
    """Python model that hands an activation to a TorchScript function (which takes only
    real tensors: the engine's patched tensors make it raise)."""

    def forward(self, x):
        return self.head(_scripted_gate(self.features(x)).mean(dim=(2, 3)))


class BranchesOnType(Small):
    """Python model whose code takes another branch for anything that is not a plain
    tensor: it runs, but computes something else on the engine's patched tensors."""

    def forward(self, x):
        y = self.features(x)
        if type(y) is not torch.Tensor:
            y = y * 1.5
        return self.head(y.mean(dim=(2, 3)))


def _clf(model: nn.Module) -> mindlens.Classifier:
    torch.manual_seed(3)
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    return mindlens.Classifier(model.double().eval(), (12, 12), channels=2)


KW = {"window": 3, "stride": 2, "score": "logit"}


def test_default_mode_is_auto_and_runs_the_engine_with_the_exact_map():
    clf = _clf(Small())
    x = torch.randn(2, 2, 12, 12, dtype=torch.float64)
    auto = Occlusion(**KW).explain(clf, x, Targets(top_k=2))
    exact = Occlusion(mode="exact", **KW).explain(clf, x, Targets(top_k=2))
    assert auto.params["mode"] == "auto"
    path = auto.extras["exact_path"]
    assert path["engine"] == "incremental" and path["note"] is None
    assert path["check_windows"] >= 2 and path["max_abs_difference"] <= path["tolerance"]
    assert torch.equal(auto.targets, exact.targets)
    torch.testing.assert_close(auto.maps, exact.maps, rtol=0,
                               atol=1e-12 * float(exact.maps.abs().max()))
    # the check windows are counted: N + 1 evaluations plus the windows checked
    assert auto.cost.forward == exact.cost.forward + path["check_windows"]


@pytest.mark.parametrize(("asset", "window", "stride"), [
    ("cifar10_resnet20", 12, 10), ("mobilenet_v2", 80, 72)])
def test_default_equals_the_whole_model_path_on_asset_models(asset, window, stride, request):
    """The guarantee: float32 rounding only, within 1e-5 of the map's maximum (the largest
    difference between two whole-model runs at other batch sizes was 1.4e-5)."""
    clf = request.getfixturevalue(asset.split("_", 1)[1] if asset.startswith("cifar")
                                  else asset)
    torch.manual_seed(0)
    x = torch.randn(1, 3, *clf.input_size)
    before = fingerprint(clf.module)
    kw = {"window": window, "stride": stride, "batch_size": 16}
    auto = Occlusion(**kw).explain(clf, x, Targets(top_k=2))
    exact = Occlusion(mode="exact", **kw).explain(clf, x, Targets(top_k=2))
    assert_untouched(before, clf.module)
    assert auto.extras["exact_path"]["engine"] == "incremental"
    assert auto.extras["exact_path"]["max_abs_difference"] <= auto.extras["exact_path"]["tolerance"]
    assert torch.equal(auto.targets, exact.targets)
    torch.testing.assert_close(auto.maps, exact.maps, rtol=0,
                               atol=1e-5 * float(exact.maps.abs().max()))


def test_torchscript_model_falls_back_with_a_note():
    clf = _clf(Small())
    scripted = mindlens.Classifier(torch.jit.script(clf.module), (12, 12), channels=2)
    assert scripted.scripted
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default mode falls back without a warning
        auto = Occlusion(**KW).explain(scripted, x, Targets())
    exact = Occlusion(mode="exact", **KW).explain(scripted, x, Targets())
    assert auto.extras["exact_path"]["engine"] == "whole model"
    assert "TorchScript" in auto.extras["exact_path"]["note"]
    assert torch.equal(auto.maps, exact.maps)


def test_black_box_falls_back_with_a_note():
    clf = _clf(Small())

    def logits(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clf.module(batch)

    box = mindlens.Classifier(mindlens.BlackBox(logits), (12, 12), channels=2)
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    auto = Occlusion(**KW).explain(box, x, Targets())
    assert auto.extras["exact_path"]["engine"] == "whole model"
    assert "black box" in auto.extras["exact_path"]["note"]
    exact = Occlusion(mode="exact", **KW).explain(clf, x, Targets())
    torch.testing.assert_close(auto.maps, exact.maps, rtol=0, atol=1e-12)


def test_code_the_engine_cannot_run_falls_back_with_a_note_and_the_model_untouched():
    clf = _clf(CallsTorchScript())
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    with pytest.raises(RuntimeError):  # the engine alone fails on it
        Occlusion(mode="incremental", **KW).explain(clf, x, Targets())
    before = fingerprint(clf.module)
    auto = Occlusion(**KW).explain(clf, x, Targets())
    assert_untouched(before, clf.module)
    exact = Occlusion(mode="exact", **KW).explain(clf, x, Targets())
    assert auto.extras["exact_path"]["engine"] == "whole model"
    assert "incremental engine failed" in auto.extras["exact_path"]["note"]
    assert "RuntimeError" in auto.extras["exact_path"]["note"]
    assert torch.equal(auto.maps, exact.maps)


def test_code_that_computes_something_else_fails_the_check_and_falls_back():
    clf = _clf(BranchesOnType())
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    exact = Occlusion(mode="exact", **KW).explain(clf, x, Targets())
    wrong = Occlusion(mode="incremental", **KW).explain(clf, x, Targets())
    assert (wrong.maps - exact.maps).abs().max() > CHECK_TOLERANCE * exact.maps.abs().max()
    before = fingerprint(clf.module)
    with pytest.warns(UserWarning, match="differed from the whole model"):
        auto = Occlusion(**KW).explain(clf, x, Targets())
    assert_untouched(before, clf.module)
    assert auto.extras["exact_path"]["engine"] == "whole model"
    assert "check windows" in auto.extras["exact_path"]["note"]
    assert torch.equal(auto.maps, exact.maps)


def test_without_check_windows_the_note_says_so():
    clf = _clf(Small())
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64)
    auto = Occlusion(check_windows=0, **KW).explain(clf, x, Targets())
    assert auto.extras["exact_path"]["engine"] == "incremental"
    assert "not checked" in auto.extras["exact_path"]["note"]
