"""The types of the declared feature support (:mod:`fedstrata.config.compat`):
features, drivers and refused pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = ["NOT_BUILT", "Detect", "Driver", "Feature", "Refusal"]

Detect = Callable[["FedConfig"], bool]


@dataclass(frozen=True)
class Feature:
    """One optional feature.

    Attributes:
        key: short name (``compression``), used by the tables and the pair matrix.
        title: what it is, for messages and the docs.
        setting: the configuration key that switches it on.
        docs: the docs page that describes it.
        on: whether a configuration has it switched on.
        example: overrides that switch it on (with what it needs) in a small run.
        needs: it takes effect only with one of these features (empty: on its own).
        simulated: why a deployment has no such setting, for a feature that only
            models what real devices do (empty: the feature is not simulated).
    """

    key: str
    title: str
    setting: str
    docs: str
    on: Detect
    example: tuple[str, ...]
    needs: tuple[str, ...] = ()
    simulated: str = ""


@dataclass(frozen=True)
class Refusal:
    """Two features that do not combine (delete the entry once they do).

    Attributes:
        pair: the two feature keys.
        reason: why, as the error message and the docs say it.
        in_principle: True when the reason holds for any implementation; False when
            the combination is not built yet.
        when: a narrower condition on the configuration (None: whenever both are on).
        condition: ``when`` in words, for the docs.
        example: overrides that make ``when`` hold (for the tests and the table).
    """

    pair: tuple[str, str]
    reason: str
    in_principle: bool
    when: Detect | None = None
    condition: str = ""
    example: tuple[str, ...] = ()


@dataclass(frozen=True)
class Driver:
    """What moves a federation's bytes and time, and the features it runs.

    Attributes:
        key: short name.
        title: for messages and the docs.
        selected_by: the feature that selects this simulator driver (None: the flat
            default, or the runtime, which ``fedstrata center`` selects).
        supports: the features it runs; any other feature is refused.
        docs: its docs page.
    """

    key: str
    title: str
    selected_by: str | None
    supports: frozenset[str]
    docs: str


NOT_BUILT = "not built yet"
