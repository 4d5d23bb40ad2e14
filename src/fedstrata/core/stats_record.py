"""The base of the typed per-round records (:mod:`fedstrata.core.metrics`): how a
record validates its fields, stores them and names its legacy ``extras`` keys.

NumPy-free, in ``core``, so every producer can build a record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import ClassVar

from fedstrata.errors import DataError

__all__ = ["StatsRecord"]


@dataclass(frozen=True)
class StatsRecord:
    """Base of the typed records: validation, plain-dict form, legacy ``extras`` keys.

    Subclasses set ``FAMILY`` (their ``RoundMetrics`` field), ``INTS`` (int fields),
    ``SIGNED`` (float fields that may be negative), ``PREFIX`` and ``LEGACY`` (the key
    a field had in ``extras``: ``LEGACY.get(name, PREFIX + name)``).
    """

    FAMILY: ClassVar[str] = ""
    INTS: ClassVar[frozenset[str]] = frozenset()
    SIGNED: ClassVar[frozenset[str]] = frozenset()
    PREFIX: ClassVar[str] = ""
    LEGACY: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        """Validate every field (ints stay ints, floats become floats).

        Raises:
            DataError: a field breaks its rule; the message names it, its value and rule.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            object.__setattr__(self, f.name, self._checked(f.name, value))

    def _checked(self, name: str, value: object) -> int | float:
        where = f"{type(self).__name__}.{name}={value!r} is invalid"
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an int" if name in self.INTS else "a float"
            raise DataError(f"{where}: must be {kind}")
        if name in self.INTS:
            if not isinstance(value, int) and not float(value).is_integer():
                raise DataError(f"{where}: must be an int")
            if value < 0:
                raise DataError(f"{where}: must be >= 0")
            return int(value)
        number = float(value)
        if math.isinf(number):
            raise DataError(f"{where}: must be finite (or NaN: not measurable)")
        if number < 0 and name not in self.SIGNED:
            raise DataError(f"{where}: must be >= 0")
        return number

    def as_dict(self) -> dict[str, int | float]:
        """The present fields by name (``None`` fields left out), for storage."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def legacy_keys(cls) -> dict[str, str]:
        """Field name -> the ``RoundMetrics.extras`` key it had before typed records."""
        return {f.name: cls.LEGACY.get(f.name, cls.PREFIX + f.name) for f in fields(cls)}
