"""Every entry point leaves a train-mode model untouched (BatchNorm running statistics,
Dropout, spectral norm's power-iteration buffers, frozen parameters): ``explain`` for every
method, ``explain_all``, ``predict`` and ``mindlens.evaluate.evaluate`` with every metric
it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mindlens
from mindlens.evaluate import evaluate

from .conftest import assert_untouched, fingerprint
from .test_concurrency import FAST, train_mode_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_probe_model_changes_when_run_naively() -> None:
    """The model used below really is fragile: one plain training-mode forward with
    gradients changes its BatchNorm statistics and spectral-norm vectors."""
    clf = train_mode_classifier()
    before = fingerprint(clf.module)
    clf.module(torch.randn(2, 3, 16, 16))
    with pytest.raises(AssertionError, match="state"):
        assert_untouched(before, clf.module)


@pytest.mark.parametrize("method", [n for n in mindlens.methods.names() if n != "mace"])
def test_explain_leaves_train_mode_model_untouched(method: str) -> None:
    clf = train_mode_classifier()
    before = fingerprint(clf.module)
    x = torch.randn(2, 3, 16, 16)
    mindlens.explain(clf, x, method, **FAST.get(method, {}))
    assert_untouched(before, clf.module)
    assert clf.module.training


def test_predict_and_explain_all_leave_model_untouched() -> None:
    clf = train_mode_classifier()
    before = fingerprint(clf.module)
    x = torch.randn(2, 3, 16, 16)
    clf.predict(x)
    mindlens.explain_all(clf, x, ["saliency", "gradcam", "lrp"])
    assert_untouched(before, clf.module)


def test_evaluate_leaves_train_mode_model_untouched(tmp_path: Path) -> None:
    clf = train_mode_classifier()
    before = fingerprint(clf.module)
    x = torch.rand(3, 3, 16, 16)
    masks = [torch.zeros(16, 16, dtype=torch.bool) for _ in range(3)]
    for m in masks:
        m[4:10, 4:10] = True
    table = evaluate(clf, x, masks, ["saliency", "gradcam", "area_occlusion"], tmp_path,
                     steps=4, sensitivity_samples=2, sanity_layers=1,
                     params={"area_occlusion": FAST["area_occlusion"]})
    assert [r["method"] for r in table.rows] == ["saliency", "gradcam", "area_occlusion"]
    assert all(r.get("status") != "not applicable" for r in table.rows), table.rows
    assert_untouched(before, clf.module)
    assert clf.module.training
