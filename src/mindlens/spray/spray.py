"""Spectral Relevance Analysis (SpRAy) of one class's relevance maps.

Lapuschkin, Wäldchen, Binder, Montavon, Samek, Müller 2019, "Unmasking Clever Hans
predictors and assessing what machines really learn", Nature Communications 10:1096;
spectral clustering after von Luxburg 2007 and Ng, Jordan, Weiss 2002; defaults follow
CoRelAy (Anders et al. 2021) with the fixes of spec §20: sum pooling to at most 32x32,
L1 normalisation, a kNN graph that never lists a sample as its own neighbour (ties broken
by index), the exact symmetric normalised Laplacian (dense ``eigh`` up to 5,000 maps,
``eigsh`` with a fixed start vector beyond), sorted eigenvalues, unit-length rows with
fixed signs, eigengap for the number of clusters, seeded k-means on the first ``k*``
columns (NJW).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.linalg import eigsh

DENSE_MAX = 5000


def pool(maps: np.ndarray, most: int = 32) -> np.ndarray:
    """Sum-pool ``[N, H, W]`` maps by the factor ``ceil(max(H, W) / most)`` (zero padding)."""
    n, h, w = maps.shape
    f = max(1, -(-max(h, w) // most))
    if f == 1:
        return maps.astype(np.float64)
    ph, pw = -(-h // f) * f, -(-w // f) * f
    padded = np.zeros((n, ph, pw))
    padded[:, :h, :w] = maps
    return padded.reshape(n, ph // f, f, pw // f, f).sum(axis=(2, 4))


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Divide each row by its L1 norm (``"l1_abs"``; all-zero rows stay zero)."""
    v = vectors.reshape(len(vectors), -1).astype(np.float64)
    s = np.abs(v).sum(1, keepdims=True)
    return np.divide(v, s, out=np.zeros_like(v), where=s > 0)


def _nearest(d: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``d``, the indices of the ``k`` smallest entries; among equal distances
    at the boundary the lower indices win (a partial sort: O(N) per row)."""
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    rows = np.arange(len(d))[:, None]
    edge = d[rows, part].max(1)
    ties = np.flatnonzero((d <= edge[:, None]).sum(1) > k)  # rare: resolve exactly
    for r in ties:
        order = np.lexsort((np.arange(d.shape[1]), d[r]))
        part[r] = order[:k]
    return part


def knn_affinity(v: np.ndarray, k: int = 10, block: int = 1024) -> sp.csr_matrix:
    """Symmetric kNN affinity (CoRelAy ``SparseKNN``): weight 1 to each sample's ``k``
    nearest others by Euclidean distance, then ``(A + Aᵀ) / 2``. Rows are computed in
    blocks, so memory stays ``O(block · N)``."""
    n = len(v)
    k = min(k, n - 1)
    sq = (v * v).sum(1)
    rows, cols = [], []
    for s in range(0, n, block):
        e = min(s + block, n)
        d = sq[s:e, None] + sq[None, :] - 2 * v[s:e] @ v.T
        np.maximum(d, 0, out=d)  # rounding: a duplicate is at distance 0, not below
        d[np.arange(e - s), np.arange(s, e)] = np.inf  # never its own neighbour
        rows.append(np.repeat(np.arange(s, e), k))
        cols.append(_nearest(d, k).ravel())
    a = sp.csr_matrix((np.ones(n * k), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n))
    return ((a + a.T) / 2).tocsr()


@dataclass
class Spectrum:
    """Eigenvalues of ``L_sym`` (ascending) and the row-normalised embedding."""

    eigenvalues: np.ndarray
    embedding: np.ndarray


def spectral_embedding(a: sp.csr_matrix, q: int = 32) -> Spectrum:
    """The ``q`` smallest eigenvalues of ``L_sym = I − D^-1/2 A D^-1/2`` and their
    eigenvectors, rows scaled to unit length, each column's largest entry positive."""
    n = a.shape[0]
    q = max(1, min(q, n - 1))
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.where(deg > 0, 1 / np.sqrt(np.where(deg > 0, deg, 1)), 0.0)
    m = sp.diags(inv) @ a @ sp.diags(inv)
    if n <= DENSE_MAX:
        lam, vec = eigh(np.eye(n) - m.toarray(), subset_by_index=[0, q - 1])
    else:
        v0 = np.random.default_rng(0).uniform(0.5, 1.0, n)
        mu, vec = eigsh(m, k=q, which="LA", v0=v0, tol=1e-8)
        lam = 1 - mu
    order = np.argsort(lam, kind="stable")
    lam, vec = np.clip(lam[order], 0, 2), vec[:, order]
    signs = np.sign(vec[np.abs(vec).argmax(0), np.arange(vec.shape[1])])
    vec = vec * np.where(signs == 0, 1, signs)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    return Spectrum(lam, np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0))


@dataclass
class Gap:
    """The eigengap choice: ``k``, the gap ratio and the near-zero eigenvalue count."""

    k: int
    ratio: float
    near_zero: int

    @property
    def clear(self) -> bool:
        """A gap stands out (ratio >= 2), or the graph falls into ``k`` components."""
        return self.ratio >= 2 or self.near_zero == self.k > 1


def eigengap(eigenvalues: np.ndarray, k_min: int = 2, k_max: int = 10) -> Gap:
    """``k* = argmax_{k_min <= i <= k_max} (λ_{i+1} − λ_i)`` (1-based), von Luxburg 2007;
    a kNN graph with ``c >= k_min`` connected components (``c`` eigenvalues below 1e-10)
    has its clusters already: then ``k* = c`` (at most ``k_max``)."""
    lam = np.asarray(eigenvalues)
    gaps = np.diff(lam)  # gaps[i - 1] = λ_{i+1} − λ_i
    near = int((lam < 1e-10).sum())
    hi = min(k_max, len(gaps))
    if hi < k_min:
        return Gap(1, 0.0, near)
    window = gaps[k_min - 1:hi]
    k = min(near, hi) if near >= k_min else k_min + int(np.argmax(window))
    med = float(np.median(gaps)) if len(gaps) else 0.0
    ratio = float(gaps[k - 1] / med) if med > 0 else float("inf")
    return Gap(k, ratio, near)


def kmeans(embedding: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means (``n_init=10``, seeded) on the first ``k`` columns of the embedding."""
    from ..scans.store import need

    KMeans = need("sklearn.cluster", "audit").KMeans
    threadpool_limits = need("threadpoolctl", "audit").threadpool_limits

    if k <= 1:
        return np.zeros(len(embedding), dtype=np.int64)
    with threadpool_limits(1):  # OpenMP threads spin badly on a busy machine
        return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
            embedding[:, :k]).astype(np.int64)


@dataclass
class SprayResult:
    eigenvalues: np.ndarray
    embedding: np.ndarray
    gap: Gap
    labels: np.ndarray
    vectors: np.ndarray


def spray(maps: np.ndarray, k_neighbours: int = 10, q: int = 32, n_clusters: int | None = None,
          pool_to: int = 32, seed: int = 0) -> SprayResult:
    """The whole pipeline on ``[N, H, W]`` maps of one class: pool, normalise, kNN graph,
    spectrum, eigengap (or ``n_clusters``), k-means."""
    v = normalise(pool(np.asarray(maps, dtype=np.float64), pool_to))
    a = knn_affinity(v, k_neighbours)
    spec = spectral_embedding(a, q)
    gap = eigengap(spec.eigenvalues)
    labels = kmeans(spec.embedding, n_clusters or gap.k, seed)
    return SprayResult(spec.eigenvalues, spec.embedding, gap, labels, v)


def tsne(embedding: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE picture of the spectral embedding (for looking only, spec §20.7)."""
    from ..scans.store import need

    TSNE = need("sklearn.manifold", "audit").TSNE
    threadpool_limits = need("threadpoolctl", "audit").threadpool_limits

    n = len(embedding)
    if n < 5:
        return np.zeros((n, 2))
    with threadpool_limits(1):  # Barnes-Hut with spinning OpenMP threads: 50x slower
        return TSNE(n_components=2, init="random", perplexity=min(30.0, (n - 1) / 3),
                    random_state=seed).fit_transform(embedding)
