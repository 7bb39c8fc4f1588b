"""``Explanation.logits``: every method hands back the model's outputs on the clean images
from the forward pass it ran anyway (so callers such as ``scan`` need no second pass),
also when the batch runs in chunks."""

from __future__ import annotations

import pytest
import torch

import mindlens

from ..test_concurrency import FAST, train_mode_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("method", [n for n in mindlens.methods.names() if n != "mace"])
def test_logits_are_the_models_outputs_on_the_clean_images(method: str) -> None:
    torch.manual_seed(0)
    clf = train_mode_classifier()
    x = torch.randn(3, 3, 16, 16)
    with clf.patched(), torch.no_grad():  # eval mode, model left as it was
        reference = clf(x)
    e = mindlens.explain(clf, x, method, max_batch=2, **FAST.get(method, {}))
    assert e.logits is not None, f"{method} gives no logits"
    assert e.logits.shape == reference.shape
    scale = float(reference.abs().max())
    # LRP runs its canonized forward (BatchNorm merged): equal up to float rounding
    torch.testing.assert_close(e.logits, reference, atol=1e-5 * scale, rtol=0)
