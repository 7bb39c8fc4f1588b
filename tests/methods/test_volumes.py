"""3-D: occlusion and area occlusion on a Conv3d classifier over volumes [B, C, D, H, W]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mindlens

from ..conftest import assert_untouched, fingerprint


def conv3d_classifier() -> mindlens.Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                        nn.Conv3d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                        nn.Flatten(), nn.Linear(4, 2)).double().eval()
    return mindlens.Classifier(net, (8, 8), channels=1, mean=(0.5,), std=(0.2,))


def test_volume_occlusion_modes_agree_and_model_untouched():
    clf = conv3d_classifier()
    x = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    before = fingerprint(clf.module)
    maps = {mode: mindlens.explain(clf, x, "occlusion", window=4, stride=2, mode=mode,
                                   score="logit").maps
            for mode in ("exact", "incremental", "auto")}
    assert_untouched(before, clf.module)
    assert maps["exact"].shape == (2, 1, 8, 8, 8)
    torch.testing.assert_close(maps["incremental"], maps["exact"], rtol=0, atol=1e-12)
    torch.testing.assert_close(maps["auto"], maps["exact"], rtol=0, atol=1e-12)
    # one window per octant (window = stride = 4): the map is constant on each octant and
    # equals occluding that octant by hand
    e = mindlens.explain(clf, x[:1], "occlusion", window=4, stride=4, score="logit")
    with torch.no_grad():
        s0 = clf(x[:1])[0, e.targets[0, 0]]
        xo = x[:1].clone()
        xo[:, :, 4:, :4, 4:] = 0
        drop = s0 - clf(xo)[0, e.targets[0, 0]]
    block = e.maps[0, 0, 4:, :4, 4:]
    torch.testing.assert_close(block, torch.full_like(block, float(drop)), rtol=0, atol=1e-12)


def test_volume_area_occlusion_slic_and_atlas():
    clf = conv3d_classifier()
    x = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    e = mindlens.explain(clf, x, "area_occlusion", segmenter_options={"n_segments": 8})
    labels = e.extras["labels"][0]
    assert labels.shape == (8, 8, 8)
    for row in e.extras["regions"][0]:
        values = e.maps[0, 0][labels == row["id"]]
        assert torch.all(values == row["drop"][0])
    atlas = np.zeros((8, 8, 7), dtype=np.int64)
    with pytest.raises(mindlens.InputError, match="atlas has shape"):
        mindlens.explain(clf, x, "area_occlusion", regions=atlas)
