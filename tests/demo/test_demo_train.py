"""The lesion-supervision term of the demo model's training (:func:`lesion_loss`)."""

from __future__ import annotations

import math

import pytest
import torch

from mindlens.demo.train import lesion_loss


def _head() -> torch.nn.Linear:
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))  # "diseased" reads channel 0
    return head


def test_lesion_loss_is_the_spatial_softmax_mass_on_the_lesion_cells():
    """On a 4x4 feature map of a 16x16 image, a lesion pixel at (5, 9) falls into cell (1, 2):
    the loss is ``-log softmax(cam)[1, 2]``, small when the class-diseased map peaks there,
    large when it peaks elsewhere; channel 1 (weight 0) does not count."""
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 5, 9] = True
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 1] = 50.0  # ignored by the diseased class
    on, off = feats.clone(), feats.clone()
    on[0, 0, 1, 2] = 5.0
    off[0, 0, 3, 0] = 5.0
    head = _head()
    want = -math.log(math.exp(5) / (math.exp(5) + 15))
    assert lesion_loss(on, head, mask).item() == pytest.approx(want)
    assert lesion_loss(off, head, mask).item() == pytest.approx(-math.log(1 / (math.exp(5) + 15)))


def test_lesion_loss_skips_images_without_lesions_and_has_gradients():
    head = _head()
    feats = torch.randn(3, 2, 4, 4, requires_grad=True)
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    assert lesion_loss(feats, head, masks).item() == 0.0
    masks[1, :4, :4] = True
    loss = lesion_loss(feats, head, masks)
    loss.backward()
    assert loss > 0 and feats.grad[1, 0].abs().sum() > 0
    assert feats.grad[[0, 2]].abs().sum() == 0  # healthy eyes: no localisation signal
