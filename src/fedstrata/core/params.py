"""Parameter specifications and the flat float32 vector every transform works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ShapeError

__all__ = ["FloatVector", "ParamSpec"]

FloatVector = NDArray[np.float32]


@dataclass(frozen=True)
class ParamSpec:
    """Names, shapes and offsets of a model's parameters inside one flat vector.

    All parameters are stored as float32 in the flat vector, in the order given.

    Attributes:
        names: parameter names, unique.
        shapes: one shape per name.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...] = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ShapeError(f"ParamSpec: {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ShapeError(f"ParamSpec: parameter names must be unique, got {self.names}")
        offsets, total = [], 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            if any(d < 0 for d in shape):
                raise ShapeError(f"ParamSpec: parameter {name!r} has negative dim {shape}")
            offsets.append(total)
            total += prod(shape)
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "size", total)

    @classmethod
    def from_arrays(cls, named: Sequence[tuple[str, NDArray[np.generic]]]) -> ParamSpec:
        """Build a spec from ``(name, array)`` pairs."""
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(tuple(int(d) for d in a.shape) for _, a in named),
        )

    @property
    def nbytes(self) -> int:
        """Size of the flat float32 vector in bytes."""
        return self.size * 4

    def zeros(self) -> FloatVector:
        """A new zero vector of this spec's size."""
        return np.zeros(self.size, dtype=np.float32)

    def check(self, vector: NDArray[np.generic], what: str = "vector") -> FloatVector:
        """Return ``vector`` if it is a 1-D float32 array of the right size.

        Raises:
            ShapeError: wrong dtype, rank or length.
        """
        if not isinstance(vector, np.ndarray):
            raise ShapeError(f"{what}: expected a numpy array, got {type(vector).__name__}")
        if vector.ndim != 1 or vector.shape[0] != self.size:
            raise ShapeError(f"{what}: expected shape ({self.size},), got {vector.shape}")
        if vector.dtype != np.float32:
            raise ShapeError(f"{what}: expected dtype float32, got {vector.dtype}")
        return vector.view(np.float32)

    def flatten(
        self, arrays: Sequence[NDArray[np.generic]], out: FloatVector | None = None
    ) -> FloatVector:
        """Copy per-parameter arrays into one flat float32 vector.

        Raises:
            ShapeError: wrong number of arrays or a shape mismatch.
        """
        if len(arrays) != len(self.names):
            raise ShapeError(f"flatten: expected {len(self.names)} arrays, got {len(arrays)}")
        flat = self.zeros() if out is None else self.check(out, "flatten out")
        for name, shape, offset, array in zip(
            self.names, self.shapes, self.offsets, arrays, strict=True
        ):
            if tuple(array.shape) != shape:
                raise ShapeError(f"flatten: {name!r} expected shape {shape}, got {array.shape}")
            flat[offset : offset + prod(shape)] = np.asarray(array).reshape(-1)
        return flat

    def unflatten(self, vector: FloatVector) -> list[FloatVector]:
        """Split a flat vector into per-parameter arrays (views, no copy)."""
        flat = self.check(vector, "unflatten")
        return [
            flat[offset : offset + prod(shape)].reshape(shape)
            for shape, offset in zip(self.shapes, self.offsets, strict=True)
        ]
