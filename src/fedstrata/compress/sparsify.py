"""Sparsification kernels: which coordinates of the flat update a client sends.

* Top-k by magnitude (Aji & Heafield, "Sparse Communication for Distributed Gradient
  Descent", EMNLP 2017; Lin et al., "Deep Gradient Compression", ICLR 2018). Instead of
  a selection over the whole vector, :func:`topk_indices` estimates the threshold from a
  random sample (as DGC does), keeps the candidates ``|x| >= t`` in one cache-friendly
  pass, and selects exactly ``k`` among the few candidates. The result is the exact
  top-k set; only when the sample misjudges (probability ~1e-5) does it fall back to a
  full ``argpartition``.
* :func:`topk_approx_indices` stops after the candidate pass when the count is within
  a tolerance of ``k`` (the count sent is then approximate).
* Random-k (Stich et al., "Sparsified SGD with Memory", NeurIPS 2018) from a seed shared
  by the cohort, so every client of a round uses the same support (what secure
  aggregation needs). :func:`randk_support` uses only the raw PCG64 bit stream, which
  NumPy keeps stable across versions, so clients and server always agree.

All functions return sorted, unique ``int64`` indices.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.params import FloatVector

__all__ = [
    "randk_support",
    "topk_approx_indices",
    "topk_exact_indices",
    "topk_indices",
]

IndexArray = NDArray[np.int64]

_SCAN_CHUNK = 1 << 16  # elements per pass step: the abs/compare buffers stay in L2
_SAMPLE_HITS = 1024  # expected sample points above the threshold
_MIN_SAMPLE = 8192
_Z = 4.0  # safety margin (standard deviations) of the exact variant's threshold
APPROX_TOLERANCE = 0.1


def topk_exact_indices(x: FloatVector, k: int) -> IndexArray:
    """The ``k`` largest-magnitude coordinates by a full ``argpartition`` (reference)."""
    n = x.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    part = np.argpartition(np.abs(x), n - k)[n - k :]
    return np.sort(part).astype(np.int64, copy=False)


def topk_indices(x: FloatVector, k: int, rng: np.random.Generator) -> IndexArray:
    """The exact top-``k`` set by magnitude, via a sampled threshold and one pass.

    Args:
        x: finite float32 vector.
        k: number of coordinates to keep, ``1 <= k``.
        rng: source of the sample positions (the result does not depend on it, except
            for which of several tied values is kept).
    """
    threshold = _sample_threshold(x, k, rng, margin=_Z)
    if threshold is None:
        return topk_exact_indices(x, k)
    cand = _candidates(x, threshold)
    if cand.shape[0] < k:
        return topk_exact_indices(x, k)
    return _trim(x, cand, k)


def topk_approx_indices(
    x: FloatVector, k: int, rng: np.random.Generator, tolerance: float = APPROX_TOLERANCE
) -> IndexArray:
    """About ``k`` largest-magnitude coordinates: ``|x| >= t`` for a sampled ``t``.

    The count is within ``tolerance * k`` of ``k``; when the sampled threshold misses
    by more, the candidates are trimmed to exactly ``k`` (too many) or a correction pass
    runs :func:`topk_indices` (too few).
    """
    threshold = _sample_threshold(x, k, rng, margin=0.0)
    if threshold is None:
        return topk_exact_indices(x, k)
    cand = _candidates(x, threshold)
    count = cand.shape[0]
    if abs(count - k) <= tolerance * k:
        return cand
    if count < k:  # correction pass with the exact variant's safety margin
        return topk_indices(x, k, rng)
    return _trim(x, cand, k)


def _sample_threshold(
    x: FloatVector, k: int, rng: np.random.Generator, margin: float
) -> float | None:
    """A magnitude threshold that about ``k`` (plus ``margin`` sigmas) values exceed.

    Returns ``None`` when a sample would not be much cheaper than a full selection.
    """
    n = x.shape[0]
    frac = k / n
    sample = max(_MIN_SAMPLE, math.ceil(_SAMPLE_HITS / frac))
    if k >= n or sample * 4 > n:
        return None
    mags = np.abs(x[rng.integers(0, n, size=sample)])
    hits = sample * frac
    rank = min(sample, max(1, math.ceil(hits + margin * math.sqrt(hits))))
    return float(np.partition(mags, sample - rank)[sample - rank])


def _candidates(x: FloatVector, threshold: float) -> IndexArray:
    """Sorted indices with ``|x| >= threshold``, computed chunk by chunk."""
    n = x.shape[0]
    size = min(n, _SCAN_CHUNK)
    mags = np.empty(size, dtype=np.float32)
    mask = np.empty(size, dtype=np.bool_)
    parts = []
    thr = np.float32(threshold)
    for start in range(0, n, size):
        chunk = x[start : start + size]
        m, b = mags[: chunk.shape[0]], mask[: chunk.shape[0]]
        np.abs(chunk, out=m)
        np.greater_equal(m, thr, out=b)
        found = np.flatnonzero(b)
        if found.shape[0]:
            parts.append(found + start if start else found)
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64, copy=False)


def _trim(x: FloatVector, cand: IndexArray, k: int) -> IndexArray:
    """The ``k`` largest-magnitude of the sorted candidates, still sorted."""
    count = cand.shape[0]
    if count == k:
        return cand
    mags = np.abs(x[cand])
    kth = np.partition(mags, count - k)[count - k]
    above = mags > kth
    missing = k - int(np.count_nonzero(above))
    if missing:
        ties = np.flatnonzero(mags == kth)[:missing]
        above[ties] = True
    kept: IndexArray = cand[above]
    return kept


def randk_support(seed: int, size: int, k: int) -> IndexArray:
    """``k`` distinct coordinates of ``range(size)`` drawn from ``seed`` (sorted).

    Every party holding ``seed`` computes the same support. Only the raw PCG64 stream
    is used (stable across NumPy versions); draws are taken in order, duplicates
    dropped, until ``k`` distinct coordinates are found.

    Raises:
        ValueError: ``k`` outside ``[0, size]``.
    """
    if not 0 <= k <= size:
        raise ValueError(f"randk_support: k={k} must be in [0, size={size}]")
    if k == size:
        return np.arange(size, dtype=np.int64)
    if 2 * k > size:  # draw the smaller complement: few duplicates to skip
        keep = np.ones(size, dtype=np.bool_)
        keep[randk_support(seed, size, size - k)] = False
        return np.flatnonzero(keep).astype(np.int64, copy=False)
    bits = np.random.PCG64(seed)
    drawn = np.empty(0, dtype=np.int64)
    first = drawn
    while first.shape[0] < k:
        need = k - first.shape[0]
        batch = bits.random_raw(need + need // 4 + 16) % np.uint64(size)
        drawn = np.concatenate([drawn, batch.astype(np.int64)])
        first = np.unique(drawn, return_index=True)[1]
    first.sort()
    return np.sort(drawn[first[:k]])
