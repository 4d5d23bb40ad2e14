"""The integer ring of secure aggregation, and how other stages enter it.

Inputs are elements of ``Z / 2^modulus_bits`` stored as uint32 and summed with
wraparound. Quantized updates (unsigned or signed) enter with :func:`to_ring`,
distributed-DP integer noise (e.g. the distributed discrete Gaussian of Kairouz,
Liu, Steinke, ICML 2021, produced by ``fedstrata.privacy``) is added with
:func:`add_noise`, and the unmasked sum leaves with :func:`from_ring`. Sparse
updates compose when every client of the cohort uses the same support (random-k
indices from a cohort-shared seed): aggregate the ``k`` selected values.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError, ShapeError
from fedstrata.secagg.prg import U32Vector

__all__ = ["add_noise", "from_ring", "to_ring"]


def _check_bits(modulus_bits: int) -> None:
    if not 1 <= modulus_bits <= 32:
        raise ConfigError(f"modulus_bits must be in [1, 32], got {modulus_bits}")


def to_ring(values: NDArray[np.integer], modulus_bits: int = 32) -> U32Vector:
    """Map integers (two's complement for negatives) into the ring.

    Raises:
        ConfigError: ``modulus_bits`` is out of range or ``values`` is not integer.
        ShapeError: ``values`` is not one-dimensional.
    """
    _check_bits(modulus_bits)
    if values.ndim != 1:
        raise ShapeError(f"ring input must be 1-D, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(f"ring input must be an integer array, got {values.dtype}")
    mask = np.int64((1 << modulus_bits) - 1)
    return (values.astype(np.int64) & mask).astype(np.uint32)


def add_noise(vector: U32Vector, noise: NDArray[np.integer]) -> U32Vector:
    """``vector += noise`` in the ring (in place), e.g. distributed-DP integer noise.

    Raises:
        ShapeError: the shapes differ.
        ConfigError: ``noise`` is not an integer array.
    """
    if noise.shape != vector.shape:
        raise ShapeError(f"noise shape {noise.shape} != vector shape {vector.shape}")
    if not np.issubdtype(noise.dtype, np.integer):
        raise ConfigError(f"noise must be an integer array, got {noise.dtype}")
    np.add(vector, noise.astype(np.int64).astype(np.uint32), out=vector)
    return vector


def from_ring(
    vector: U32Vector, modulus_bits: int = 32, *, signed: bool = True
) -> NDArray[np.int64]:
    """Lift ring elements to integers (centred in ``[-2^(b-1), 2^(b-1))`` if signed).

    Raises:
        ConfigError: ``modulus_bits`` is out of range.
    """
    _check_bits(modulus_bits)
    size = np.int64(1) << modulus_bits
    out = vector.astype(np.int64) & (size - 1)
    if signed:
        out[out >= size // 2] -= size
    return out
