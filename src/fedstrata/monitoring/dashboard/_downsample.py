"""Server-side downsampling, so the browser draws a few hundred points whatever the run.

* :func:`lttb` keeps the visual shape of a line (Largest-Triangle-Three-Buckets,
  Steinarsson 2013, "Downsampling Time Series for Visual Representation", ch. 4):
  the first and last points, and in each of ``n - 2`` equal buckets the point that
  spans the largest triangle with the point kept before and the next bucket's mean.
* :func:`bin_mean` averages a dense grid (devices x rounds) into at most
  ``rows x cols`` cells, ignoring NaN (a device not selected in a round).

Both are pure NumPy functions over explicit arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedstrata.errors import DataError

__all__ = ["bin_edges", "bin_mean", "lttb"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def lttb(x: FloatArray, y: FloatArray, n_out: int) -> IntArray:
    """Indices of the ``n_out`` points of ``(x, y)`` that keep the line's shape.

    ``x`` must be increasing and both finite; with ``n_out >= len(x)`` (or fewer than
    three points wanted) every index, or the two ends, comes back.

    Raises:
        DataError: ``x`` and ``y`` differ in length, or ``n_out`` < 2.
    """
    if x.shape != y.shape or x.ndim != 1:
        raise DataError(f"lttb: x and y must be 1-d of one length (got {x.shape}, {y.shape})")
    if n_out < 2:
        raise DataError(f"lttb: n_out must be >= 2 (got {n_out})")
    n = len(x)
    if n <= n_out:
        return np.arange(n, dtype=np.int64)
    edges = np.linspace(1, n - 1, n_out - 1).astype(np.int64)  # n_out - 2 inner buckets
    keep = np.empty(n_out, dtype=np.int64)
    keep[0], keep[-1] = 0, n - 1
    prev = 0
    for b in range(n_out - 2):
        lo, hi = edges[b], edges[b + 1]
        nlo, nhi = hi, edges[b + 2] if b + 2 < len(edges) else n
        mx, my = x[nlo:nhi].mean(), y[nlo:nhi].mean()
        bx, by = x[lo:hi], y[lo:hi]
        area = np.abs((x[prev] - mx) * (by - y[prev]) - (x[prev] - bx) * (my - y[prev]))
        prev = lo + int(np.argmax(area))
        keep[b + 1] = prev
    return keep


def bin_edges(n: int, bins: int) -> IntArray:
    """Start offsets of ``min(n, bins)`` near-equal bins over ``range(n)`` (``n`` >= 1).

    Raises:
        DataError: ``n`` or ``bins`` < 1.
    """
    if n < 1 or bins < 1:
        raise DataError(f"bin_edges: n and bins must be >= 1 (got n={n}, bins={bins})")
    return np.unique(np.linspace(0, n, min(n, bins) + 1).astype(np.int64)[:-1])


def bin_mean(grid: FloatArray, rows: int, cols: int) -> FloatArray:
    """The NaN-ignoring mean of ``grid`` over near-equal blocks: at most ``rows x cols``.

    A block with no finite value is NaN.

    Raises:
        DataError: ``grid`` is not 2-d and non-empty, or ``rows``/``cols`` < 1.
    """
    if grid.ndim != 2 or 0 in grid.shape:
        raise DataError(f"bin_mean: grid must be 2-d and non-empty (got shape {grid.shape})")
    r_edges, c_edges = bin_edges(grid.shape[0], rows), bin_edges(grid.shape[1], cols)
    finite = np.isfinite(grid)
    sums = np.where(finite, grid, 0.0)
    total = np.add.reduceat(np.add.reduceat(sums, r_edges, axis=0), c_edges, axis=1)
    count = np.add.reduceat(
        np.add.reduceat(finite.astype(np.int64), r_edges, axis=0), c_edges, axis=1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
