"""Each metric equals Quantus 0.6.0's implementation on the same inputs.

Quantus flags are set so the definitions match, as stated per test: ``normalise=False``
everywhere (our metrics are scale-invariant or, for the sensitivities, defined on raw
maps), ``abs=False`` for the localisation metrics (we pass the positive part ourselves
where the definition clips negatives), ``abs=True`` for sparseness and complexity (both
are defined on ``|a|``). Quantus wants NumPy ``[N, 1, H, W]`` maps and masks.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from mindlens import metrics

N, H, W = 6, 12, 10


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def quantus(torchvision_stub):
    warnings.filterwarnings("ignore")
    import quantus as q

    return q


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(7)
    maps = torch.randn(N, H, W, generator=g, dtype=torch.float64)
    masks = torch.zeros(N, H, W, dtype=torch.bool)
    for i in range(N):  # one box per image, different sizes and places
        r, c = int(torch.randint(0, H - 4, (1,), generator=g)), int(
            torch.randint(0, W - 4, (1,), generator=g))
        masks[i, r:r + 2 + i % 3, c:c + 3 + i % 2] = True
    maps[0, 3, 4] = 10.0  # image 0: the maximum inside its mask
    masks[0, 3, 4] = True
    x = torch.zeros(N, 1, H, W)
    return maps, masks, x


def q_call(metric, maps, masks, x):
    a = maps.numpy()[:, None].copy()
    s = masks.numpy()[:, None].astype(float)
    return np.asarray(metric(model=None, x_batch=x.numpy(), y_batch=np.zeros(len(maps), int),
                             a_batch=a, s_batch=s, device="cpu"), dtype=float)


def test_pointing_game_matches_quantus_without_tolerance(quantus, batch):
    maps, masks, x = batch
    ours = metrics.pointing_game(maps, masks, tolerance=0)
    theirs = q_call(quantus.PointingGame(abs=False, normalise=False), maps, masks, x)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert 0 < ours.sum() < N  # both hits and misses occur


def test_relevance_mass_accuracy_matches_quantus_on_positive_part(quantus, batch):
    maps, masks, x = batch
    ours = metrics.relevance_mass_accuracy(maps, masks)
    # Quantus does not clip negatives itself: give it the positive part (spec §9.3)
    theirs = q_call(quantus.RelevanceMassAccuracy(abs=False, normalise=False),
                    maps.clamp_min(0), masks, x)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)


def test_relevance_rank_accuracy_matches_quantus(quantus, batch):
    maps, masks, x = batch
    ours = metrics.relevance_rank_accuracy(maps, masks)
    theirs = q_call(quantus.RelevanceRankAccuracy(abs=False, normalise=False), maps, masks, x)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-12)
    assert len(set(ours.tolist())) > 2


def test_sparseness_and_complexity_match_quantus(quantus, batch):
    maps, masks, x = batch
    sp = q_call(quantus.Sparseness(abs=True, normalise=False), maps, masks, x)
    cx = q_call(quantus.Complexity(abs=True, normalise=False), maps, masks, x)
    np.testing.assert_allclose(metrics.sparseness(maps).numpy(), sp, rtol=1e-9)
    np.testing.assert_allclose(metrics.complexity(maps).numpy(), cx, rtol=1e-9)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_sensitivity_matches_quantus_with_same_noise(quantus, resnet20, kind):
    """Quantus Max-/AvgSensitivity with ``normalise=False, abs=False`` (raw maps), its
    default Frobenius norms of the difference and of the clean map (relative sensitivity),
    and a ``perturb_func`` that draws the same U[-r, r] noise as ours from a torch
    generator with the same seed, in the same order."""
    from ..conftest import asset_images

    clf = resnet20
    x = clf.preprocess(asset_images("foolbox/cifar10_0[0-1]*.png"))
    classes = clf.predict(x).argmax(dim=1)
    explain = metrics.method_explainer("saliency")
    radius, n_samples, seed = 0.05, 4, 3
    ours = metrics.sensitivity(explain, clf, x, classes, radius=radius,
                               n_samples=n_samples, seed=seed)

    gen = torch.Generator().manual_seed(seed)

    def perturb(arr, indices, **kwargs):
        noise = metrics.robustness.uniform_noise(x.shape, radius, gen, x.dtype)
        return arr + noise.reshape(arr.shape).numpy()

    def explain_np(model, inputs, targets, **kwargs):
        t = torch.as_tensor(inputs, dtype=x.dtype)
        return explain(clf, t, torch.as_tensor(targets)).numpy()[:, None]

    a_clean = explain(clf, x, classes).numpy()[:, None]
    cls = quantus.MaxSensitivity if kind == "max" else quantus.AvgSensitivity
    metric = cls(nr_samples=n_samples, normalise=False, abs=False, perturb_func=perturb,
                 lower_bound=radius)
    theirs = metric(model=clf.module, x_batch=x.numpy(), y_batch=classes.numpy(),
                    a_batch=a_clean, explain_func=explain_np, device="cpu")
    value = ours.max if kind == "max" else ours.avg
    np.testing.assert_allclose(value.numpy(), np.asarray(theirs, float), rtol=1e-5)
    assert (value > 0).all()
