"""Your own server strategy: a server optimizer or an aggregation rule of your own
(Issue 14 part 6), named by import string like a task.

``server.optimizer: my_project.strategy:ServerNesterov`` names any object with the
two methods of :class:`~fedstrata.algorithms.server.ServerOptimizer`, the protocol
FedAvg, FedAvgM and FedAdam implement::

    init(params) -> state
    step(params, delta, state) -> (new_params, new_state)   # never mutate inputs

``server.aggregator: my_project.strategy:clipped_mean`` names either a full
:class:`~fedstrata.aggregation.protocol.Aggregator` (``init / accumulate /
accumulate_payload / merge / finalize / finalize_metrics`` and ``mergeable``, as
WeightedMean and Krum implement it), or simply a :class:`CenterRule`: a function (or an
object with ``aggregate``) of the stacked ``(clients, size)`` float32 updates and
their ``(clients,)`` float64 weights returning the ``(size,)`` aggregate.
:class:`RuleAggregator` runs such a rule at the center: it keeps every update of the
round (O(cohort x model) memory) and is not mergeable, so it cannot run at inner tiers
(hierarchy) or under secure aggregation, which both need the weighted mean.

The attribute an import string names may be an instance, a function (a rule), or a
class, called with no arguments. Its module is imported with the project directory
first on ``sys.path``. Errors in your code become a
:class:`~fedstrata.errors.TaskError` naming your function.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, final

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation.metrics import MetricSums
from fedstrata.aggregation.protocol import (
    UNKNOWN_CLIENT,
    Aggregator,
    check_metrics,
    check_size,
    check_vector,
    check_weight,
)
from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.usercode import call_user, describe, import_object
from fedstrata.errors import AggregationError, TaskError
from fedstrata.pipeline.stage import Codec

__all__ = [
    "CenterRule",
    "RuleAggregator",
    "RuleState",
    "UserServerOptimizer",
    "as_aggregator",
    "as_server_optimizer",
    "is_import_string",
    "resolve_aggregator",
    "resolve_server_optimizer",
]

_AGGREGATOR_METHODS = ("init", "accumulate", "accumulate_payload", "merge", "finalize")


class CenterRule(Protocol):
    """An aggregation rule over one round's updates, run at the center."""

    def __call__(
        self, vectors: NDArray[np.float32], weights: NDArray[np.float64]
    ) -> NDArray[np.floating[Any]]: ...


def is_import_string(name: str) -> bool:
    """Whether a config value names your own object (``module:attribute``)."""
    return ":" in name


def _instantiate(obj: object, what: str) -> object:
    if not inspect.isclass(obj):
        return obj
    try:
        return obj()
    except Exception as exc:
        raise TaskError(f"{what} {describe(obj)}() failed: {type(exc).__name__}: {exc}") from exc


@final
@dataclass(frozen=True, eq=False)
class UserServerOptimizer:
    """Your server optimizer, its errors and outputs checked (a ServerOptimizer)."""

    inner: Any

    def init(self, params: FloatVector) -> object:
        """Your ``init``. Raises: TaskError naming it when it raises."""
        return call_user(self.inner.init, "server optimizer", params)

    def step(self, params: FloatVector, delta: FloatVector, state: Any) -> tuple[FloatVector, Any]:
        """Your ``step``, whose new parameters must be finite float32 of the model's size.

        Raises:
            TaskError: it raised, returned no ``(params, state)`` pair, or parameters of
                another shape or with NaN/Inf.
        """
        who = f"server optimizer {describe(self.inner.step)}"
        out = call_user(self.inner.step, "server optimizer", params, delta, state)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TaskError(f"{who} returned {type(out).__name__}, not (params, state)")
        return _checked_vector(out[0], params.shape[0], who), out[1]


def _checked_vector(value: object, size: int, who: str) -> FloatVector:
    array = np.asarray(value)
    if array.shape != (size,) or array.dtype.kind != "f":
        raise TaskError(
            f"{who} returned an array of shape {array.shape} {array.dtype}; "
            f"expected ({size},) floats"
        )
    if not np.isfinite(array).all():
        raise TaskError(f"{who} returned NaN/Inf parameters")
    return np.ascontiguousarray(array, dtype=np.float32)


def as_server_optimizer(obj: object) -> ServerOptimizer[Any]:
    """``obj`` (an instance or a class) as a checked server optimizer.

    Raises:
        TaskError: it lacks ``init`` or ``step``, or its class cannot be built.
    """
    obj = _instantiate(obj, "server optimizer")
    if isinstance(obj, UserServerOptimizer) or _is_builtin(obj):
        return obj  # type: ignore[return-value]
    if not all(callable(getattr(obj, m, None)) for m in ("init", "step")):
        raise TaskError(
            f"server optimizer {describe(obj)} needs methods init(params) and "
            "step(params, delta, state) -> (params, state)"
        )
    return UserServerOptimizer(obj)


def _is_builtin(obj: object) -> bool:
    return type(obj).__module__.startswith("fedstrata.")


def resolve_server_optimizer(spec: str, project_dir: Path | None = None) -> ServerOptimizer[Any]:
    """Your server optimizer named ``module:attribute`` (see the module docstring).

    Raises:
        ConfigError: a malformed import string.
        TaskError: the import fails or the object is not a server optimizer.
    """
    return as_server_optimizer(import_object(spec, project_dir, "server.optimizer"))


@dataclass(eq=False)
class RuleState:
    """One round's updates for a :class:`RuleAggregator`: vectors, weights, metrics."""

    size: int
    vectors: list[FloatVector] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    metrics: MetricSums = field(default_factory=MetricSums)


@final
@dataclass(frozen=True, eq=False)
class RuleAggregator:
    """Runs a :class:`CenterRule` at the center: an Aggregator that is not mergeable."""

    rule: CenterRule

    @property
    def mergeable(self) -> bool:
        return False

    def init(self, size: int) -> RuleState:
        """An empty state. Raises: ShapeError for a bad ``size``."""
        return RuleState(check_size(size))

    def accumulate(
        self,
        state: RuleState,
        vector: FloatVector,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> RuleState:
        """Keep a copy of ``vector`` and its weight.

        Raises:
            ShapeError: not float32 of the state's size.
            InvalidUpdateError: NaN/Inf entries or metrics, or a bad weight.
        """
        check_vector(vector, state.size, client_id)
        w = check_weight(weight, client_id)
        checked = check_metrics(metrics, client_id)
        state.vectors.append(np.array(vector, dtype=np.float32, copy=True))
        state.weights.append(w)
        state.metrics.add(checked, w)
        return state

    def accumulate_payload(
        self,
        state: RuleState,
        codec: Codec,
        payload: Payload,
        weight: float,
        *,
        client_id: int = UNKNOWN_CLIENT,
        metrics: Mapping[str, float] | None = None,
    ) -> RuleState:
        """Decode ``payload`` and keep it. Raises: PayloadError (state unchanged)."""
        vector = codec.decode(payload)
        return self.accumulate(state, vector, weight, client_id=client_id, metrics=metrics)

    def merge(self, a: RuleState, b: RuleState) -> RuleState:
        """Always fails. Raises: AggregationError: a rule runs at the center only."""
        raise AggregationError(
            f"aggregation rule {describe(self.rule)} is not mergeable: it runs at the center "
            "only (use the weighted mean at edges and regions)"
        )

    def finalize(self, state: RuleState) -> FloatVector:
        """Your rule on the stacked updates.

        Raises:
            AggregationError: no update was accumulated.
            TaskError: the rule raised or returned a wrong shape or NaN/Inf.
        """
        if not state.vectors:
            raise AggregationError(f"aggregation rule {describe(self.rule)} got no updates")
        weights = np.asarray(state.weights, dtype=np.float64)
        out = call_user(self.rule, "aggregation rule", np.stack(state.vectors), weights)
        return _checked_vector(out, state.size, f"aggregation rule {describe(self.rule)}")

    def finalize_metrics(self, state: RuleState) -> dict[str, float]:
        """Weighted mean of each metric reported with positive weight."""
        return state.metrics.means()


def as_aggregator(obj: object) -> Aggregator[Any]:
    """``obj`` as an aggregator: a full Aggregator, or a rule wrapped in RuleAggregator.

    Raises:
        TaskError: neither an Aggregator nor a callable rule (nor an object with
            ``aggregate``), or its class cannot be built.
    """
    obj = _instantiate(obj, "aggregator")
    if all(callable(getattr(obj, m, None)) for m in _AGGREGATOR_METHODS) and hasattr(
        obj, "mergeable"
    ):
        return obj  # type: ignore[return-value]
    rule = getattr(obj, "aggregate", obj)
    if not callable(rule):
        raise TaskError(
            f"aggregator {describe(obj)} is neither an Aggregator (init, accumulate, "
            "accumulate_payload, merge, finalize, mergeable) nor a rule "
            "(vectors, weights) -> aggregate"
        )
    return RuleAggregator(rule)


def resolve_aggregator(spec: str, project_dir: Path | None = None) -> Aggregator[Any]:
    """Your aggregator named ``module:attribute`` (see the module docstring).

    Raises:
        ConfigError: a malformed import string.
        TaskError: the import fails or the object is not an aggregator.
    """
    return as_aggregator(import_object(spec, project_dir, "server.aggregator"))
