"""Every registered method on every modern test model (EfficientNet-, ConvNeXt-,
MobileNetV3-style, the spec's ModernToy, a multi-label and a single-logit model): it runs
and leaves the model untouched, or it refuses with one clear error. The expected refusals
are listed; anything else that refuses fails the test."""

from __future__ import annotations

import warnings

import pytest
import torch

import mindlens
from mindlens import methods
from mindlens.errors import InputError, NotApplicableError

from .. import modern_nets as mn
from ..conftest import assert_untouched, fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {
    "efficientnet": lambda: mn.build("efficientnet", dtype=torch.float32),
    "convnext": lambda: mn.build("convnext", dtype=torch.float32),
    "mobilenetv3": lambda: mn.build("mobilenetv3", dtype=torch.float32),
    "modern_toy": lambda: mn.build("modern_toy", dtype=torch.float32),
    "multilabel": lambda: mn.multilabel(dtype=torch.float32),
    "single_logit": lambda: mn.single_logit(dtype=torch.float32),
}
#: (method, model) -> the words the refusal must contain
REFUSALS = {
    **{("mace", m): "unit" for m in MODELS},  # needs a unit trained for the model
    **{(c, m): "labels do not compete" for c in ("sglrp", "clrp")
       for m in ("multilabel", "single_logit")},
    # CAM needs feature map -> global average pooling -> one linear layer
    **{("cam", m): "CAM needs a head" for m in ("convnext", "mobilenetv3", "modern_toy",
                                                "single_logit")},
}
PARAMS = {"occlusion": {"window": 8, "stride": 8}}


def outcome(method: str, model: str) -> str:
    """``"runs"`` or ``"refuses: <message>"`` (used by the test and the report table)."""
    clf = MODELS[model]()
    torch.manual_seed(0)
    x = torch.randn(1, 3, *clf.input_size)
    before = fingerprint(clf.module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = mindlens.explain(clf, x, method, **PARAMS.get(method, {}))
    except (NotApplicableError, InputError) as err:
        assert_untouched(before, clf.module)
        return f"refuses: {err}"
    assert_untouched(before, clf.module)
    assert e.maps.shape[:2] == (1, 1) and torch.isfinite(e.maps).all()
    assert torch.isfinite(e.probs).all() and ((e.probs >= 0) & (e.probs <= 1)).all()
    return "runs"


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method", methods.names())
def test_method_runs_or_refuses_clearly(method, model):
    got = outcome(method, model)
    expected = REFUSALS.get((method, model))
    if expected is None:
        assert got == "runs", got
    else:
        assert got.startswith("refuses") and expected in got, got
