"""SpRAy property tests (spec §20.12 1-3): planted clusters are recovered, a disconnected
kNN graph has one zero eigenvalue per component and the eigengap finds them, and the
result does not depend on the order of the images, their scale, or duplicates."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from mindlens.spray import eigengap, knn_affinity, spectral_embedding, spray
from mindlens.spray.spray import normalise, pool

YY, XX = np.mgrid[:16, :16]


def blob(cy: float, cx: float, sigma: float = 2.0) -> np.ndarray:
    return np.exp(-((YY - cy) ** 2 + (XX - cx) ** 2) / (2 * sigma ** 2))


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """80 object maps (blob in the central 8x8) and 40 marker maps (corner blob + faint
    centre), noise N(0, 0.05²)."""
    rng = np.random.default_rng(seed)
    maps = [blob(*rng.uniform(4, 12, 2)) for _ in range(80)]
    maps += [blob(1, 1) + 0.2 * blob(8, 8) for _ in range(40)]
    noise = rng.normal(0, 0.05, (120, 16, 16))
    return np.array(maps) + noise, np.array([0] * 80 + [1] * 40)


def test_two_planted_clusters_are_recovered() -> None:
    maps, flags = planted()
    res = spray(maps, k_neighbours=10, q=16)
    assert res.gap.k == 2
    ari = adjusted_rand_score(flags, res.labels)
    print(f"planted clusters: ARI {ari:.3f}, gap ratio {res.gap.ratio:.1f}")
    assert ari >= 0.95
    marker = np.bincount(res.labels[flags == 1]).argmax()
    mean = maps[res.labels == marker].mean(0)
    assert np.unravel_index(mean.argmax(), mean.shape) in {(0, 0), (0, 1), (1, 0), (1, 1),
                                                           (0, 2), (2, 0), (1, 2), (2, 1),
                                                           (2, 2)}


def test_disconnected_graph_eigengap() -> None:
    rng = np.random.default_rng(1)
    centres = [(3, 3), (3, 12), (12, 8)]
    maps = np.array([blob(*c) + rng.normal(0, 0.01, (16, 16)) for c in centres
                     for _ in range(30)])
    v = normalise(pool(maps))
    spec = spectral_embedding(knn_affinity(v, 5), q=16)
    assert int((spec.eigenvalues < 1e-10).sum()) == 3
    assert eigengap(spec.eigenvalues).k == 3
    assert np.all(spec.eigenvalues[:-1] <= spec.eigenvalues[1:])  # sorted ascending
    assert np.allclose(np.linalg.norm(spec.embedding, axis=1), 1)


def test_block_diagonal_affinity_spectrum() -> None:
    """Two disjoint cliques: eigenvalues 0, 0, then n/(n-1) for the rest."""
    import scipy.sparse as sp

    block = np.ones((6, 6)) - np.eye(6)
    a = sp.csr_matrix(np.block([[block, np.zeros((6, 6))], [np.zeros((6, 6)), block]]))
    spec = spectral_embedding(a, q=11)
    assert np.allclose(spec.eigenvalues[:2], 0, atol=1e-10)
    assert np.allclose(spec.eigenvalues[2:], 6 / 5)
    assert eigengap(spec.eigenvalues).k == 2


def test_invariances() -> None:
    maps, _ = planted(2)
    base = spray(maps, 10, 16)
    perm = np.random.default_rng(3).permutation(len(maps))
    shuffled = spray(maps[perm], 10, 16)
    assert adjusted_rand_score(base.labels[perm], shuffled.labels) == 1.0
    assert np.allclose(base.eigenvalues, shuffled.eigenvalues, atol=1e-10)
    scaled = spray(maps * 7.5, 10, 16)  # l1_abs: the scale of a map does not matter
    assert np.array_equal(scaled.labels, base.labels)
    twice = np.concatenate([maps[:10], maps[:10]])  # duplicates: no crash, never self
    a = knn_affinity(normalise(pool(twice)), 5)
    assert a.diagonal().sum() == 0
    assert a[0, 10] == 1.0  # the duplicate is a mutual nearest neighbour


def test_flags_say_called_only_where_the_maps_explain_the_prediction() -> None:
    from mindlens.spray.audit import _who

    predicted = [{"target": 1, "predicted": 1}, {"target": 1, "predicted": 1}]
    fixed = [{"target": 1, "predicted": 1}, {"target": 1, "predicted": 0}]
    assert _who("diseased", predicted) == "the images called 'diseased'"
    assert _who("diseased", fixed) == "the images explained for 'diseased'"
