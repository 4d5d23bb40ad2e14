"""The state of one engine component, as a checkpoint holds it (Issue 15 part 2).

Every stateful piece of a simulation (the coordinator, the server optimizer, a DP
budget allocator, the downlink encoder, the clients' state directory ...) gives a
:class:`StatePart` from ``state_dict()`` and takes one back in ``load_state_dict()``:
named NumPy arrays plus JSON-able metadata, nothing a pickle would have to carry.
:mod:`fedstrata.checkpoint.snapshot` puts the parts of a whole engine into one
versioned blob.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import CheckpointCorrupt

__all__ = ["JsonValue", "StatePart", "Stateful", "int_array"]

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]
"""A value ``json`` writes and reads back unchanged (floats included: ``repr`` is exact)."""


@dataclass(frozen=True)
class StatePart:
    """Named arrays and JSON metadata of one component.

    The arrays are held, not copied: a component hands out arrays it will not
    mutate afterwards (or copies of those it will).
    """

    meta: Mapping[str, JsonValue] = field(default_factory=dict)
    arrays: Mapping[str, NDArray[Any]] = field(default_factory=dict)

    def array(self, name: str) -> NDArray[Any]:
        """The array ``name``.

        Raises:
            CheckpointCorrupt: the part has no such array.
        """
        try:
            return self.arrays[name]
        except KeyError:
            raise CheckpointCorrupt(
                f"checkpoint part lacks the array {name!r} (has {sorted(self.arrays)})"
            ) from None

    def value(self, name: str) -> Any:
        """The metadata value ``name``.

        Raises:
            CheckpointCorrupt: the part has no such value.
        """
        try:
            return self.meta[name]
        except KeyError:
            raise CheckpointCorrupt(
                f"checkpoint part lacks the value {name!r} (has {sorted(self.meta)})"
            ) from None

    def same_as(self, other: StatePart) -> bool:
        """Equal metadata and bit-identical arrays (dtype, shape and bytes)."""
        if dict(self.meta) != dict(other.meta) or set(self.arrays) != set(other.arrays):
            return False
        return all(_same(a, other.arrays[k]) for k, a in self.arrays.items())


def _same(a: NDArray[Any], b: NDArray[Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@runtime_checkable
class Stateful(Protocol):
    """A component a checkpoint can save and restore."""

    def state_dict(self) -> StatePart:
        """The component's state now (arrays it will not mutate later)."""
        ...

    def load_state_dict(self, part: StatePart) -> None:
        """Restore a state taken by :meth:`state_dict` on a component built alike.

        Raises:
            CheckpointCorrupt: the part does not fit this component.
        """
        ...


def int_array(values: list[int]) -> NDArray[np.int64]:
    """A 1-D int64 array (helper for parts holding id lists)."""
    return np.asarray(values, dtype=np.int64).reshape(-1)
