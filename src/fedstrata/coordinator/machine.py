"""The round engine as a state machine without I/O.

One instance coordinates one run, synchronously (the default) or with a buffering
policy (FedBuff, :mod:`fedstrata.coordinator.buffered`: clients in flight, a server
step every ``K`` accepted updates, freed slots sent the model again) over the same
events and commands. Each synchronous round: ``StartRound`` selects a cohort and
returns ``SendModel``; every ``UpdateArrived`` / ``ClientFailed`` is answered with
``Accept`` or ``Reject`` (unknown, duplicate and late clients are rejected with a
reason); ``DeadlinePassed`` closes the round with a :class:`RoundOutcome`. Time comes
from the events, so the simulator's virtual clock and the runtime's real clock drive
the same logic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.buffered import BufferedRounds, Buffering
from fedstrata.coordinator.events import (
    Accept,
    ClientFailed,
    CloseRound,
    Command,
    DeadlinePassed,
    Event,
    Reject,
    RoundOutcome,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.summary import summarize_losses
from fedstrata.core.context import derive_rng
from fedstrata.core.statepart import Stateful, StatePart
from fedstrata.errors import CheckpointError, ConfigError, ProtocolError

__all__ = ["RoundCoordinator", "RoundPolicy", "Selector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundPolicy:
    """How rounds are run.

    Attributes:
        clients_per_round: cohort size; ``None`` selects every available client.
        min_clients: fewest accepted updates for the round to update the model.
        deadline_s: seconds after the round start by which updates must arrive.
        root_seed: seed of the run; cohort selection draws from it.
        poisson_rate: when set, each available client joins independently with this
            probability (Poisson sampling, as differential-privacy accounting assumes)
            and ``clients_per_round`` is ignored.
    """

    clients_per_round: int | None = None
    min_clients: int = 1
    deadline_s: float | None = None
    root_seed: int = 0
    poisson_rate: float | None = None

    def __post_init__(self) -> None:
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ConfigError(f"clients_per_round must be >= 1, got {self.clients_per_round}")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients must be >= 1, got {self.min_clients}")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ConfigError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.poisson_rate is not None and not 0 < self.poisson_rate <= 1:
            raise ConfigError(f"poisson_rate must be in (0, 1], got {self.poisson_rate}")


def _check_bufferable(policy: RoundPolicy) -> None:
    """A buffered run takes only the policy's seed: it has no cohort and no deadline."""
    given = {
        "clients_per_round": policy.clients_per_round,
        "deadline_s": policy.deadline_s,
        "poisson_rate": policy.poisson_rate,
    }
    for name, value in given.items():
        if value is not None:
            raise ConfigError(f"RoundPolicy.{name}={value} does not apply to a buffered run")
    if policy.min_clients != 1:
        raise ConfigError(
            f"RoundPolicy.min_clients={policy.min_clients} does not apply to a buffered run "
            "(each server step takes the buffer's K updates)"
        )


class Phase(Enum):
    IDLE = "idle"
    COLLECTING = "collecting"


class Selector(Protocol):
    """Chooses ``k`` of the ``available`` clients (e.g. Oort's utility-based selection)."""

    def select(
        self, round_idx: int, available: NDArray[np.int64], k: int, rng: np.random.Generator
    ) -> NDArray[np.int64]: ...


class RoundCoordinator:
    """Selects cohorts and decides which updates count; see the module docstring.

    Args:
        policy: cohort size, deadline, sampling.
        selector: who to pick when ``clients_per_round`` is fewer than the available
            clients (buffered: who takes a freed slot); the default is uniform sampling.
        buffering: run FedBuff's buffered policy instead of synchronous rounds; the
            policy's ``root_seed`` seeds the dispatch draws, its other fields must be
            left at their defaults (a buffered run has no cohort and no deadline).

    Raises:
        ConfigError: ``buffering`` with a cohort size, ``min_clients``, deadline or
            Poisson rate.
    """

    def __init__(
        self,
        policy: RoundPolicy,
        selector: Selector | None = None,
        buffering: Buffering | None = None,
    ) -> None:
        self.policy = policy
        self.selector = selector
        self.buffering = buffering
        self._buffered: BufferedRounds | None = None
        if buffering is not None:
            _check_bufferable(policy)
            self._buffered = BufferedRounds(buffering, policy.root_seed, selector)
        self._phase = Phase.IDLE
        self._round = -1
        self._start_s = 0.0
        self._cohort: set[int] = set()
        self._reported: set[int] = set()
        self._accepted: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._late: list[int] = []

    @property
    def round_idx(self) -> int:
        """The open (or last) round; buffered: the model version, i.e. the open step."""
        return self._round if self._buffered is None else self._buffered.version

    @property
    def in_flight(self) -> dict[int, int]:
        """The clients sent the model that have not reported yet, each with the round
        (buffered: the model version) it was sent."""
        if self._buffered is not None:
            return self._buffered.in_flight
        if self._phase is not Phase.COLLECTING:
            return {}
        return dict.fromkeys(sorted(self._cohort - self._reported), self._round)

    def state_dict(self) -> StatePart:
        """The last round run and the selector's state, between rounds (Issue 15).

        Raises:
            CheckpointError: a round is open, the coordinator is buffered (FedBuff's
                in-flight clients and dispatch RNG are not checkpointed), or the
                selector keeps state it cannot save.
        """
        if self._buffered is not None:
            raise CheckpointError("a buffered (FedBuff) coordinator cannot be checkpointed")
        if self._phase is not Phase.IDLE:
            raise CheckpointError(f"round {self._round} is open: checkpoint between rounds")
        selector = _selector_part(self.selector)
        return StatePart(meta={"round": self._round, "selector": selector})

    def load_state_dict(self, part: StatePart) -> None:
        """Continue after the round a :meth:`state_dict` recorded.

        Raises:
            CheckpointError: see :meth:`state_dict`.
        """
        self.state_dict()  # the same refusals
        self._round = int(part.value("round"))
        if self.selector is not None and isinstance(self.selector, Stateful):
            self.selector.load_state_dict(StatePart(meta=part.value("selector") or {}))

    def handle(self, event: Event) -> list[Command]:
        """Advance the state machine by one event.

        Raises:
            ProtocolError: an event that makes no sense in the current phase
                (e.g. ``StartRound`` while a round is open).
        """
        if self._buffered is not None:
            return self._buffered.handle(event)
        if isinstance(event, StartRound):
            return self._start(event)
        if self._phase is not Phase.COLLECTING:
            if isinstance(event, UpdateArrived):
                return [Reject(event.client_id, "no round is open", late=True)]
            raise ProtocolError(f"{type(event).__name__} received while no round is open")
        if isinstance(event, UpdateArrived):
            return [self._on_update(event)]
        if isinstance(event, ClientFailed):
            return self._on_failure(event)
        return [self._close(event)]

    def select(self, round_idx: int, available: np.ndarray) -> np.ndarray:
        """The cohort of ``round_idx``: a seeded sample of ``available`` (sorted)."""
        k = self.policy.clients_per_round
        ids = np.sort(np.asarray(available, dtype=np.int64))
        rng = derive_rng(self.policy.root_seed, round_idx, -1, "select")
        if self.policy.poisson_rate is not None:
            return ids[rng.random(ids.size) < self.policy.poisson_rate]
        # a selector of fixed blocks (DP-FTRL's epoch order) picks its block even when
        # no more than k clients are available: those are not necessarily the block's
        fixed = bool(getattr(self.selector, "fixed_blocks", False))
        if k is None or (k >= ids.size and not fixed):
            return ids
        if self.selector is not None:
            chosen = np.unique(np.asarray(self.selector.select(round_idx, ids, k, rng)))
            if not np.isin(chosen, ids).all():
                raise ProtocolError(f"round {round_idx}: the selector chose unavailable clients")
            return chosen.astype(np.int64)
        return np.sort(rng.choice(ids, size=k, replace=False))

    def is_late(self, arrival_s: float) -> bool:
        """Whether an update arriving at ``arrival_s`` misses the open round's deadline
        (the one rule; a tree driver asks it when an update reaches its edge)."""
        deadline = self.policy.deadline_s
        return deadline is not None and arrival_s - self._start_s > deadline

    def _start(self, event: StartRound) -> list[Command]:
        if self._phase is Phase.COLLECTING:
            raise ProtocolError(
                f"round {event.round_idx} started while round {self._round} is open"
            )
        if event.round_idx <= self._round:
            raise ProtocolError(f"round {event.round_idx} does not follow round {self._round}")
        cohort = self.select(event.round_idx, event.available)
        self._phase, self._round, self._start_s = Phase.COLLECTING, event.round_idx, event.now_s
        self._cohort = set(cohort.tolist())
        self._reported, self._accepted, self._failed, self._late = set(), [], [], []
        log.info("round %d: selected %d clients", self._round, cohort.size)
        deadline = None if self.policy.deadline_s is None else event.now_s + self.policy.deadline_s
        return [SendModel(self._round, cohort, deadline)]

    def _check_membership(self, client_id: int) -> str | None:
        if client_id not in self._cohort:
            return f"client {client_id} was not selected for round {self._round}"
        if client_id in self._reported:
            return f"duplicate submission from client {client_id} in round {self._round}"
        return None

    def _on_update(self, event: UpdateArrived) -> Command:
        problem = self._check_membership(event.client_id)
        if problem is not None:
            log.warning("round %d: rejected update: %s", self._round, problem)
            return Reject(event.client_id, problem)
        self._reported.add(event.client_id)
        if self.is_late(event.arrival_s):
            log.info("round %d: client %d missed the deadline", self._round, event.client_id)
            self._late.append(event.client_id)
            return Reject(event.client_id, "missed the round deadline", late=True)
        self._accepted.append(event.client_id)
        return Accept(event.client_id, event.weight)

    def _on_failure(self, event: ClientFailed) -> list[Command]:
        if event.client_id in self._accepted:  # received, but unusable on decoding
            self._accepted.remove(event.client_id)
        elif self._check_membership(event.client_id) is not None:
            return []
        self._reported.add(event.client_id)
        log.info("round %d: client %d dropped: %s", self._round, event.client_id, event.reason)
        self._failed.append((event.client_id, event.reason))
        return []

    def _close(self, event: DeadlinePassed) -> Command:
        applied = len(self._accepted) >= self.policy.min_clients
        missing = sorted(self._cohort - self._reported)
        self._late.extend(missing)
        outcome = RoundOutcome(
            round_idx=self._round,
            selected=len(self._cohort),
            accepted=tuple(self._accepted),
            failed=tuple(self._failed),
            late=tuple(self._late),
            end_s=event.now_s,
            applied=applied,
        )
        self._phase = Phase.IDLE
        self._log_close(outcome)
        return CloseRound(outcome)

    def _log_close(self, outcome: RoundOutcome) -> None:
        """At most one warning per round: an aggregate not applied, and who was lost."""
        lines = []
        if not outcome.applied:
            accepted, needed = len(outcome.accepted), self.policy.min_clients
            lines.append(f"only {accepted} updates (< min_clients {needed}); aggregate unused")
        losses = summarize_losses(outcome)
        if losses is not None:
            lines.append(losses)
        if lines:
            log.warning("round %d: %s", outcome.round_idx, "; ".join(lines))


def _selector_part(selector: Selector | None) -> dict[str, object] | None:
    """A selector's state as JSON (None: none or uniform sampling, which keeps none)."""
    if selector is None:
        return None
    if not isinstance(selector, Stateful):
        raise CheckpointError(
            f"the selector {type(selector).__name__} keeps state a checkpoint cannot save"
        )
    part = selector.state_dict()
    if part.arrays:
        raise CheckpointError(f"the selector {type(selector).__name__}'s state has arrays")
    return dict(part.meta)
