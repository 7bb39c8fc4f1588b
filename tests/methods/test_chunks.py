"""Bounded memory: a batch explained in chunks (``max_batch``) gives the maps, targets,
scores and per-image extras of one call on the whole batch, for every method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mindlens
from mindlens.methods import chunks

# every registered method that runs without a trained add-on unit
METHODS = [m for m in mindlens.methods.names() if not mindlens.methods.get(m).needs.training]


def tiny() -> mindlens.Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return mindlens.Classifier(net.eval(), input_size=(12, 12))


@pytest.mark.parametrize("method", METHODS)
def test_chunked_batch_equals_one_call(method: str) -> None:
    clf = tiny()
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    params = {"window": 4, "stride": 4} if method == "occlusion" else {}
    whole = mindlens.explain(clf, x, method, top_k=2, max_batch=5, **params)
    parts = mindlens.explain(clf, x, method, top_k=2, max_batch=2, **params)
    assert parts.maps.shape == whole.maps.shape
    torch.testing.assert_close(parts.maps, whole.maps, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert torch.equal(parts.targets, whole.targets)
    torch.testing.assert_close(parts.scores, whole.scores)
    if whole.raw is not None:
        torch.testing.assert_close(parts.raw, whole.raw, rtol=1e-4, atol=1e-5)
    for key, value in whole.extras.items():
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == 5:
            assert parts.extras[key].shape == value.shape, key


def test_per_image_targets_are_split_with_the_batch() -> None:
    clf = tiny()
    x = torch.rand(5, 3, 12, 12)
    e = mindlens.explain(clf, x, "saliency", target=[0, 1, 2, 3, 0], max_batch=2)
    assert e.targets[:, 0].tolist() == [0, 1, 2, 3, 0]
    with pytest.raises(mindlens.InputError, match="3 entries for 5 images"):
        mindlens.explain(clf, x, "saliency", target=[0, 1, 2], max_batch=2)


def test_default_chunk_follows_the_input_size() -> None:
    big, small = torch.zeros(1, 3, 224, 224), torch.zeros(1, 3, 32, 32)
    assert 1 <= chunks.default_max_batch(big) < 32 < chunks.default_max_batch(small)
    assert chunks.default_max_batch(big) * big.numel() * 4 * chunks.ACTIVATION_FACTOR \
        <= chunks.CHUNK_BUDGET
    with pytest.raises(mindlens.InputError, match="max_batch must be a positive integer"):
        mindlens.explain(tiny(), torch.zeros(1, 3, 12, 12), "saliency", max_batch=0)
