"""Metrics without a Quantus counterpart (or with a different definition there), checked
on small examples computed by hand, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

from mindlens import methods, metrics
from mindlens.errors import InputError
from mindlens.explanation import Cost, Explanation


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)[None]


def test_pointing_game_tolerance_is_strict_distance():
    maps = torch.zeros(3, 20, 20, dtype=torch.float64)
    maps[:, 0, 0] = 1.0
    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[0, 9, 12] = True  # distance exactly 15: 225 < 225 is false -> miss
    masks[1, 9, 11] = True  # distance sqrt(202) < 15 -> hit
    masks[2, 0, 0] = True  # inside
    assert metrics.pointing_game(maps, masks).tolist() == [0.0, 1.0, 1.0]
    assert metrics.pointing_game(maps, masks, tolerance=15.01).tolist() == [1.0, 1.0, 1.0]
    assert metrics.pointing_game(maps, masks, tolerance=0).tolist() == [0.0, 0.0, 1.0]


def test_pointing_game_ties_take_first_in_row_major_order():
    maps = t([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.pointing_game(maps, t([[0, 0], [1, 0]], torch.bool), tolerance=0).item() == 0
    assert metrics.pointing_game(maps, t([[0, 1], [0, 0]], torch.bool), tolerance=0).item() == 1


def test_energy_pointing_game_and_mass_accuracy_use_the_positive_part():
    maps, masks = t([[1.0, -1.0], [2.0, 3.0]]), t([[1, 0], [0, 1]], torch.bool)
    assert metrics.energy_pointing_game(maps, masks).item() == pytest.approx(4 / 6)
    assert metrics.relevance_mass_accuracy(maps, masks).item() == pytest.approx(4 / 6)


def test_rank_accuracy_by_hand():
    maps = t([[0.9, 0.1, 0.8], [0.7, 0.2, 0.3]])
    masks = t([[1, 1, 0], [0, 0, 1]], torch.bool)  # K=3, top-3 = 0.9, 0.8, 0.7 -> 1 hit
    assert metrics.relevance_rank_accuracy(maps, masks).item() == pytest.approx(1 / 3)


def test_iou_of_thresholded_map():
    maps, masks = t([[1.0, 0.1], [0.5, 0.05]]), t([[1, 1], [0, 0]], torch.bool)
    assert metrics.iou(maps, masks).item() == pytest.approx(1 / 3)  # >= 0.15: (0,0), (1,0)
    assert metrics.iou(maps, masks, fraction=0.05).item() == pytest.approx(2 / 4)


def test_empty_mask_gives_nan_and_bad_masks_are_refused():
    maps = torch.rand(2, 4, 4, dtype=torch.float64)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[1, 0, 0] = True
    for fn in (metrics.pointing_game, metrics.relevance_mass_accuracy,
               metrics.relevance_rank_accuracy, metrics.iou, metrics.energy_pointing_game):
        out = fn(maps, masks)
        assert math.isnan(out[0]) and not math.isnan(out[1])
    with pytest.raises(InputError, match="resize the masks"):
        metrics.pointing_game(maps, torch.zeros(2, 8, 8, dtype=torch.bool))
    with pytest.raises(InputError, match="bool"):
        metrics.iou(maps, masks.float())
    with pytest.raises(InputError, match=r"\[N, H, W\]"):
        metrics.sparseness(maps[0])


def test_gini_and_entropy_by_hand():
    one_hot = t([[0.0, 0.0], [0.0, 5.0]])
    flat = t([[2.0, -2.0], [2.0, 2.0]])
    assert metrics.sparseness(one_hot).item() == pytest.approx(0.75, abs=1e-6)  # (n-1)/n
    assert metrics.sparseness(flat).item() == pytest.approx(0.0, abs=1e-6)
    assert metrics.complexity(one_hot).item() == pytest.approx(0.0, abs=1e-9)
    assert metrics.complexity(flat).item() == pytest.approx(math.log(4))


def test_spearman_and_ssim_match_scipy_and_skimage():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (3, 9, 9), generator=g).double()  # many ties
    b = a + torch.rand(3, 9, 9, generator=g, dtype=torch.float64) * 3
    sp = metrics.spearman(a, b)
    for i in range(3):
        ref = stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic
        assert sp[i].item() == pytest.approx(ref, rel=1e-12)
    an, bn = (metrics.similarity.normalize01(m) for m in (a, b))
    ss = metrics.ssim(an, bn)
    for i in range(3):
        ref = structural_similarity(an[i].numpy(), bn[i].numpy(), data_range=1.0)
        assert ss[i].item() == pytest.approx(ref, rel=1e-10)


def _sum_model(x):
    """Two logits: the pixel sum and 0, so p(class 0) = sigmoid(sum)."""
    s = x.flatten(1).sum(dim=1)
    return torch.stack([s, torch.zeros_like(s)], dim=1)


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_deletion_curve_by_hand():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    maps = t([[4.0, 3.0], [2.0, 1.0]])  # delete (0,0), (0,1), (1,0), (1,1) in that order
    res = metrics.deletion(_sum_model, x, maps, steps=4)
    sums = [10, 9, 7, 4, 0]
    expected = [sigmoid(s) for s in sums]
    np.testing.assert_allclose(res.curves[0].numpy(), expected, rtol=1e-12)
    area = (sum(expected) - expected[0] / 2 - expected[-1] / 2) / 4
    assert res.auc.item() == pytest.approx(area)
    two = metrics.deletion_auc(_sum_model, x, maps, steps=2)  # 2 pixels a step: 10, 7, 0
    p = [sigmoid(10), sigmoid(7), sigmoid(0)]
    assert two.item() == pytest.approx((sum(p) - p[0] / 2 - p[2] / 2) / 2)


def test_insertion_curve_by_hand():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 6, 6, generator=g, dtype=torch.float64) - 0.3
    maps = torch.rand(1, 6, 6, generator=g, dtype=torch.float64)
    # the blur: scipy's Gaussian with reflect-without-edge ('mirror'), radius 5 = 1 * sigma
    blurred = ndimage.gaussian_filter(x[0, 0].numpy(), sigma=5, mode="mirror", truncate=1.0)
    np.testing.assert_allclose(metrics.faithfulness.gaussian_blur(x)[0, 0].numpy(), blurred,
                               rtol=1e-10)
    order = np.argsort(-maps[0].flatten().numpy(), kind="stable")
    diff = x[0, 0].flatten().numpy() - blurred.flatten()
    sums = [blurred.sum() + diff[order[:k * 12]].sum() for k in range(4)]
    res = metrics.insertion(_sum_model, x, maps, steps=3, classes=torch.tensor([0]))
    np.testing.assert_allclose(res.curves[0].numpy(), [sigmoid(s) for s in sums], rtol=1e-10)


def test_object_share_and_contrast_by_hand():
    maps = t([[1.0, 2.0], [3.0, -4.0]])
    target = t([[1, 1], [0, 0]], torch.bool)
    other = t([[0, 0], [1, 1]], torch.bool)
    assert metrics.object_share(maps, target, other).item() == pytest.approx(0.5)
    assert metrics.relevance_contrast(maps, target, other).item() == pytest.approx(0.0)
    only_neg = t([[0, 0], [0, 1]], torch.bool)
    assert metrics.object_share(maps, target, only_neg).item() == pytest.approx(1.0)
    assert metrics.relevance_contrast(maps, target, only_neg).item() == pytest.approx(0.5)


def test_cost_native_resolution_and_access():
    expl = Explanation(
        method="x", maps=torch.zeros(4, 2, 32, 32), targets=torch.zeros(4, 2, dtype=torch.long),
        scores=torch.zeros(4, 2), probs=torch.zeros(4, 2), signed=False,
        native_shape=(8, 8), cost=Cost(forward=1, backward=2, seconds=0.08),
    )
    assert metrics.native_resolution(expl) == 16.0
    assert metrics.cost_per_image(expl) == pytest.approx(
        {"forward": 1.0, "backward": 1.0, "ms": 10.0})
    assert metrics.model_access(methods.get("saliency")) == "gradients"
    assert metrics.model_access(methods.get("gradcam")) == "a layer"
    assert metrics.model_access(methods.Needs()) == "black box"
