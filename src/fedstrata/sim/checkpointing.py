"""The simulator drivers' state between rounds, as checkpoint parts (Issue 15 part 2).

A synchronous driver (flat or tree) is fully described between rounds by: the rounds
done and the virtual clock; the model and the server optimizer's state; the
coordinator (its last round, its selector); every round hook (the DP budget
allocator and its accountant, secure aggregation's record); the broadcaster (the
compressed downlink's replica and history). Everything random is derived from
``(root seed, round, client, stage)`` (:func:`fedstrata.core.context.derive_rng`),
so no generator position has to be saved. The clients' state files are the
composition root's part (:class:`fedstrata.core.state_files.StateDirSnapshot`).

Components that keep state they cannot save (a scheduling planner, a hook or a
selector without ``state_dict``) make :func:`engine_parts` raise
:class:`~fedstrata.errors.CheckpointError` rather than resume inexactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstrata.algorithms.server import ServerOptimizer
from fedstrata.coordinator import RoundCoordinator
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.coordinator.topology import Topology
from fedstrata.core.params import FloatVector
from fedstrata.core.state import ClientStateStore, MemoryStateStore
from fedstrata.core.statepart import Stateful, StatePart
from fedstrata.errors import CheckpointCorrupt, CheckpointError, ConfigError
from fedstrata.sim.hooks import Broadcaster, ClientPlanner

__all__ = [
    "Components",
    "EngineParts",
    "Resumed",
    "StateCallback",
    "engine_parts",
    "restore_engine",
    "restore_tree",
    "tree_parts",
]

EngineParts = dict[str, StatePart]
StateCallback = Callable[[int, EngineParts], None]
"""Told ``(rounds_done, parts)`` after every completed round (the checkpointer)."""


@dataclass(frozen=True)
class Resumed:
    """Where a restored driver continues: the next round, the clock, model and state."""

    rounds_done: int
    clock_s: float
    params: FloatVector
    opt_state: object


@dataclass(frozen=True)
class Components:
    """The stateful pieces every synchronous driver has."""

    driver: str
    coordinator: RoundCoordinator
    hooks: Sequence[RoundHook]
    broadcast: Broadcaster
    planner: ClientPlanner | None
    optimizer: ServerOptimizer[Any]


def engine_parts(
    c: Components, rounds_done: int, clock_s: float, params: FloatVector, opt_state: object
) -> EngineParts:
    """The driver's parts after ``rounds_done`` rounds.

    Raises:
        CheckpointError: a component keeps state a checkpoint cannot hold.
    """
    if c.planner is not None:
        raise CheckpointError(
            "the scheduling planner (predictor, registry write-back) is not checkpointed"
        )
    engine = StatePart(
        meta={"driver": c.driver, "rounds_done": rounds_done, "clock_s": clock_s},
        arrays={"params": params},
    )
    parts: EngineParts = {
        "engine": engine,
        "optimizer": StatePart(arrays=_optimizer_arrays(opt_state)),
        "coordinator": c.coordinator.state_dict(),
        "broadcast": _stateful("broadcaster", c.broadcast).state_dict(),
    }
    for i, hook in enumerate(c.hooks):
        parts[_hook_key(i, hook)] = _stateful("round hook", hook).state_dict()
    return parts


def restore_engine(c: Components, parts: Mapping[str, StatePart], size: int) -> Resumed:
    """Load ``parts`` into the components; returns where the driver continues.

    Raises:
        CheckpointCorrupt: a part is missing or does not fit (e.g. another driver,
            another model size, other round hooks).
    """
    engine = _part(parts, "engine")
    if engine.value("driver") != c.driver:
        raise CheckpointCorrupt(
            f"the checkpoint is of the {engine.value('driver')} driver, not {c.driver}"
        )
    params = engine.array("params")
    if params.shape != (size,) or params.dtype != np.float32:
        raise CheckpointCorrupt(
            f"checkpointed model is {params.dtype} {params.shape}, expected float32 ({size},)"
        )
    expected = {_hook_key(i, h) for i, h in enumerate(c.hooks)}
    saved = {k for k in parts if k.startswith("hook/")}
    if saved != expected:
        raise CheckpointCorrupt(f"checkpointed round hooks {sorted(saved)} != {sorted(expected)}")
    template = c.optimizer.init(params)
    opt_state = _optimizer_state(template, _part(parts, "optimizer"))
    c.coordinator.load_state_dict(_part(parts, "coordinator"))
    _stateful("broadcaster", c.broadcast).load_state_dict(_part(parts, "broadcast"))
    for i, hook in enumerate(c.hooks):
        _stateful("round hook", hook).load_state_dict(_part(parts, _hook_key(i, hook)))
    rounds = int(engine.value("rounds_done"))
    return Resumed(rounds, float(engine.value("clock_s")), params.copy(), opt_state)


def _hook_key(index: int, hook: object) -> str:
    return f"hook/{index}-{type(hook).__name__}"


def _part(parts: Mapping[str, StatePart], name: str) -> StatePart:
    try:
        return parts[name]
    except KeyError:
        raise CheckpointCorrupt(f"the checkpoint has no {name!r} part") from None


def _stateful(what: str, obj: object) -> Stateful:
    if not isinstance(obj, Stateful):
        raise CheckpointError(
            f"the {what} {type(obj).__name__} has no state_dict/load_state_dict: "
            "its state cannot be checkpointed"
        )
    return obj


def _optimizer_arrays(opt_state: object) -> dict[str, Any]:
    to_arrays = getattr(opt_state, "to_arrays", None)
    if to_arrays is None:
        raise CheckpointError(
            f"the server optimizer's state {type(opt_state).__name__} has no to_arrays()"
        )
    arrays: dict[str, Any] = to_arrays()
    return arrays


def _optimizer_state(template: object, part: StatePart) -> object:
    from_arrays = getattr(type(template), "from_arrays", None)
    if from_arrays is None:
        raise CheckpointError(
            f"the server optimizer's state {type(template).__name__} has no from_arrays()"
        )
    return from_arrays(dict(part.arrays))


def tree_parts(topology: Topology, partial_store: ClientStateStore | None) -> EngineParts:
    """The tree driver's own parts: the tree now (failed edges' clients re-homed) and
    the residuals of re-compressed partials.

    Raises:
        CheckpointError: the partials' residuals live in a store that cannot be saved.
    """
    parts: EngineParts = {"topology": StatePart(meta={"tree": topology.to_json()})}
    if partial_store is not None:
        if not isinstance(partial_store, MemoryStateStore):
            raise CheckpointError("partial residuals outside a MemoryStateStore")
        parts["partial_ef"] = partial_store.state_dict()
    return parts


def restore_tree(
    parts: Mapping[str, StatePart], partial_store: ClientStateStore | None
) -> Topology:
    """Load :func:`tree_parts` (the partial residuals in place); returns the tree.

    Raises:
        CheckpointCorrupt: a part is missing or not a tree.
    """
    try:
        topology = Topology.from_json(_part(parts, "topology").value("tree"))
    except ConfigError as exc:
        raise CheckpointCorrupt(f"checkpointed topology: {exc}") from exc
    if isinstance(partial_store, MemoryStateStore):
        partial_store.load_state_dict(_part(parts, "partial_ef"))
    return topology
