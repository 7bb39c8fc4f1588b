"""Every metric fed its degenerate cases (flat maps, zero maps, empty or full masks, a
single image): an undefined number is NaN (shown as n/a with a reason), never a huge value,
a division by zero or a number decided by which pixel happens to come first."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mindlens import metrics
from mindlens.metrics.criteria import (
    CHANCE_CEILING,
    CriteriaTable,
    margin_over_chance,
    summarize,
)
from mindlens.metrics.input_dependence import identical_maps, pairwise_similarity

H = W = 8


def masks_of(kind: str, n: int = 2) -> torch.Tensor:
    m = torch.zeros(n, H, W, dtype=torch.bool)
    if kind == "full":
        m[:] = True
    elif kind == "some":
        m[:, 2:4, 2:4] = True
    return m


FLAT = torch.full((2, H, W), 0.3, dtype=torch.float64)
ZERO = torch.zeros(2, H, W, dtype=torch.float64)
NEGATIVE = -torch.rand(2, H, W, dtype=torch.float64) - 0.1


@pytest.mark.parametrize(("metric", "maps", "mask"), [
    (metrics.pointing_game, FLAT, "some"),
    (metrics.pointing_game, ZERO, "some"),
    (metrics.pointing_game, torch.rand(2, H, W), "empty"),
    (metrics.relevance_rank_accuracy, FLAT, "some"),
    (metrics.relevance_rank_accuracy, torch.rand(2, H, W), "empty"),
    (metrics.iou, FLAT, "some"),
    (metrics.relevance_mass_accuracy, ZERO, "some"),
    (metrics.relevance_mass_accuracy, NEGATIVE, "some"),
    (metrics.relevance_mass_accuracy, torch.rand(2, H, W), "empty"),
    (metrics.energy_pointing_game, ZERO, "some"),
])
def test_localisation_metrics_are_nan_where_undefined(metric, maps, mask):
    assert metric(maps, masks_of(mask)).isnan().all()


def test_localisation_chance_levels_on_empty_and_full_masks():
    assert metrics.pointing_chance(masks_of("empty"), 2).isnan().all()
    assert metrics.mask_share(masks_of("empty")).isnan().all()
    assert metrics.centre_hit(masks_of("empty"), 2).isnan().all()
    assert (metrics.pointing_chance(masks_of("full"), 0) == 1).all()
    assert (metrics.mask_share(masks_of("full")) == 1).all()
    assert (metrics.centre_hit(masks_of("full"), 0) == 1).all()
    # a 2x2 mask at rows/cols 2-3 of 8x8 and tolerance 0: 4 of 64 pixels; centre (3, 3) hits
    assert metrics.pointing_chance(masks_of("some"), 0).tolist() == [4 / 64] * 2
    assert metrics.centre_hit(masks_of("some"), 0).tolist() == [1.0, 1.0]


def test_concentration_metrics_on_zero_and_flat_maps():
    assert torch.isfinite(metrics.sparseness(ZERO)).all()  # Quantus' eps: 0, not NaN
    assert metrics.sparseness(FLAT) == pytest.approx(0.0, abs=1e-6)
    assert metrics.complexity(ZERO).isnan().all()
    assert metrics.complexity(FLAT) == pytest.approx(math.log(H * W))


def test_similarity_of_constant_maps():
    assert metrics.spearman(FLAT, torch.rand(2, H, W)).isnan().all()
    assert torch.isfinite(metrics.ssim(FLAT, FLAT)).all()


def _model(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1)


def test_deletion_and_insertion_of_a_flat_map_are_nan():
    x = torch.rand(2, 1, H, W)
    assert metrics.deletion_auc(_model, x, FLAT.float(), steps=4).isnan().all()
    assert metrics.insertion_auc(_model, x, FLAT.float(), steps=4).isnan().all()
    dels, ins = metrics.random_order_aucs(_model, x, steps=4, seed=[1, 2])
    assert torch.isfinite(dels).all() and torch.isfinite(ins).all()


def test_relative_sensitivity_of_a_zero_map_is_nan_not_huge(resnet20):
    x = torch.randn(2, 3, 32, 32)
    sens = metrics.sensitivity(lambda clf, xs, c: torch.zeros(len(xs), 32, 32), resnet20, x,
                               n_samples=2)
    assert sens.max.isnan().all() and sens.avg.isnan().all()


def test_input_dependence_of_single_and_identical_maps():
    rho, same = pairwise_similarity(torch.stack([FLAT[0], FLAT[0], torch.rand(H, W).double()]))
    assert rho[0, 1] == 1.0 and same[0, 1]  # two flat maps: the same map, not NaN
    assert not same[0, 2]
    assert identical_maps(FLAT) and not identical_maps(torch.rand(2, H, W))
    assert not identical_maps(FLAT[:1])  # one map cannot be compared


def test_margin_over_chance():
    assert margin_over_chance(0.5, 0.5) == 0.0
    assert margin_over_chance(1.0, 0.2) == 1.0
    assert margin_over_chance(0.1, 0.2) < 0
    assert math.isnan(margin_over_chance(1.0, CHANCE_CEILING))
    assert math.isnan(margin_over_chance(math.nan, 0.1))


def test_summary_of_flat_maps_is_na_with_reasons_and_valid_json():
    records = [{"method": "m", "image": f"i{k}", "flat_map": 1.0, "pointing_game": None,
                "pointing_chance": 0.99, "centre_hit": 1.0, "mask_share": 0.8,
                "relevance_mass": 0.8, "deletion_auc": None, "insertion_auc": None,
                "random_deletion_auc": 0.3, "random_insertion_auc": 0.5,
                "max_sensitivity": None, "class_spearman": None, "complexity": None,
                "normalised_entropy": None, "ms_per_image": 3.0} for k in range(3)]
    info = {"native_px_per_cell": 1.0, "config_items": 0, "access": "gradients",
            "access_rank": 1, "per_channel": 0.0}
    row = summarize("m", records, info)
    for criterion in ("intuitive interpretability", "faithfulness", "robustness",
                      "class discrimination"):
        assert row["grades"][criterion] == "n/a"
        assert "flat" in row["reasons"][criterion]
    table = CriteriaTable(rows=[row])
    json.dumps(table.to_dict(), allow_nan=False)  # no NaN/inf survives into criteria.json


def test_a_chance_level_that_leaves_no_room_is_said_in_words():
    records = [{"method": "m", "image": f"i{k}", "flat_map": 0.0, "pointing_game": 1.0,
                "pointing_chance": 0.99, "centre_hit": 1.0, "mask_share": 0.9,
                "relevance_mass": 0.95} for k in range(3)]
    row = summarize("m", records, {"native_px_per_cell": 1.0, "config_items": 0,
                                   "access": "gradients", "access_rank": 1,
                                   "per_channel": 0.0})
    assert row["grades"]["intuitive interpretability"] == "n/a"
    assert "random already hits in 100%" in row["reasons"]["intuitive interpretability"]
