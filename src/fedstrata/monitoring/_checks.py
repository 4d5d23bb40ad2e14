"""Validation helpers of the metric events: each raises a DataError naming the event,
the field, the value and the rule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from fedstrata.errors import DataError

__all__ = [
    "INT64_MAX",
    "check_accuracy",
    "check_extras",
    "check_float",
    "check_int",
    "check_loss",
    "check_seconds",
    "fail",
    "set_field",
]

INT64_MAX = 2**63 - 1


def fail(event: str, name: str, value: object, rule: str) -> DataError:
    return DataError(f"{event}: {name}={value!r} is invalid: {rule}")


def check_int(
    event: str, name: str, value: object, low: int = 0, high: int | None = INT64_MAX
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(event, name, value, "must be an int")
    if value < low or (high is not None and value > high):
        rule = f"must be >= {low}" if high is None else f"must be in [{low}, 2**63)"
        raise fail(event, name, value, rule)
    return value


def check_float(event: str, name: str, value: object, *, finite: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(event, name, value, "must be a float")
    as_float = float(value)
    if finite and not math.isfinite(as_float):
        raise fail(event, name, value, "must be finite")
    return as_float


def check_seconds(event: str, name: str, value: object) -> float:
    seconds = check_float(event, name, value)
    if seconds < 0:
        raise fail(event, name, value, "must be >= 0")
    return seconds


def check_accuracy(event: str, name: str, value: object) -> float | None:
    if value is None:
        return None
    accuracy = check_float(event, name, value)
    if not 0.0 <= accuracy <= 1.0:
        raise fail(event, name, value, "must be None or in [0, 1]")
    return accuracy


def check_loss(event: str, name: str, value: object) -> float | None:
    return None if value is None else check_float(event, name, value, finite=False)


def check_extras(event: str, extras: object) -> Mapping[str, float]:
    if not isinstance(extras, Mapping):
        raise fail(event, "extras", extras, "must be a mapping of str to float")
    checked: dict[str, float] = {}
    for key, value in extras.items():
        if not isinstance(key, str) or not key:
            raise fail(event, "extras key", key, "must be a non-empty str")
        checked[key] = check_float(event, f"extras[{key!r}]", value, finite=False)
    return MappingProxyType(checked)


def set_field(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)
