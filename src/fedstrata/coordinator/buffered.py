"""FedBuff as the round engine's buffered policy (sans-IO).

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022) keeps ``concurrency`` clients training at all times, each on the model
version current when it was sent the model, and makes a server step every ``K``
accepted updates. :class:`~fedstrata.coordinator.RoundCoordinator` runs it when given
a :class:`Buffering` policy, with the events and commands of a synchronous round:

* ``StartRound(version, now, available)`` sends the model to ``concurrency`` clients
  (``SendModel``, ``round_idx`` = the model version they are sent, no deadline);
* ``UpdateArrived`` from a client in flight frees its slot and is judged by FedBuff's
  rules (:class:`~fedstrata.scheduling.FedBuffConfig`): staleness ``tau`` = versions
  since its dispatch; ``Reject(late=True)`` above ``max_staleness``, else
  ``Accept(weight, staleness=tau, scale=s(tau))``; the ``K``-th accepted update of a
  step is followed by ``CloseRound`` (the step's outcome; the version advances);
* ``ClientFailed`` from a client in flight frees its slot;
* every freed slot is given to an idle client at once (``SendModel`` of one client, on
  the version current after any step), drawn uniformly from the available clients not
  in flight with the run's seeded generator, or by the ``Selector`` when one is given.

An update from a client not in flight (never sent the model, already reported, or
holding another version than the one it claims) is rejected and frees nothing. The
driver folds accepted updates into its buffer and applies the step; the model and the
buffer stay with it (``FedBuffServer.fold`` / ``flush`` in the simulator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

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
from fedstrata.coordinator.summary import describe_losses
from fedstrata.core.context import derive_seed
from fedstrata.errors import ConfigError, ProtocolError

if TYPE_CHECKING:  # at run time the rules are only called: no import of scheduling's registry
    from fedstrata.coordinator.machine import Selector
    from fedstrata.scheduling import FedBuffConfig

__all__ = ["BufferedRounds", "Buffering"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Buffering:
    """The buffered (FedBuff) policy of the round engine.

    Attributes:
        concurrency: clients holding the model and training at any moment, >= 1.
        fedbuff: ``K`` (``buffer_size``), ``max_staleness`` and the weight ``s(tau)``.
    """

    concurrency: int
    fedbuff: FedBuffConfig

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"Buffering.concurrency must be >= 1, got {self.concurrency}")


@dataclass
class _Step:
    """What happened to the clients that reported since the last server step."""

    reports: int = 0
    accepted: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)


class BufferedRounds:
    """The buffered policy's state: the model version, the clients in flight (each with
    the version it was sent) and the open step; see the module docstring.

    Args:
        buffering: concurrency and FedBuff's rules.
        root_seed: seed of the run; the dispatch draws come from it.
        selector: who takes a freed slot (asked for one of the idle clients); the
            default is a uniform draw.
    """

    def __init__(
        self, buffering: Buffering, root_seed: int, selector: Selector | None = None
    ) -> None:
        self.buffering = buffering
        self.selector = selector
        self._rng = np.random.default_rng(derive_seed(root_seed, 0, -1, "async"))
        self._version = 0
        self._started = False
        self._pool: NDArray[np.int64] = np.empty(0, dtype=np.int64)  # who may be sent it
        self._flight: dict[int, int] = {}  # client -> the version it was sent
        self._step = _Step()

    @property
    def version(self) -> int:
        """The model version clients are sent now (the index of the open step)."""
        return self._version

    @property
    def in_flight(self) -> dict[int, int]:
        """A copy of the clients in flight, each with the version it was sent."""
        return dict(self._flight)

    def handle(self, event: Event) -> list[Command]:
        """Advance by one event.

        Raises:
            ProtocolError: a second ``StartRound``, an event before the first, or a
                ``DeadlinePassed`` (a buffered run closes a step every ``K`` accepted
                updates, not at a deadline).
        """
        if isinstance(event, StartRound):
            return self._start(event)
        if not self._started:
            if isinstance(event, UpdateArrived):
                return [Reject(event.client_id, "no round is open", late=True)]
            raise ProtocolError(f"{type(event).__name__} received before StartRound")
        if isinstance(event, UpdateArrived):
            return self._on_update(event)
        if isinstance(event, ClientFailed):
            return self._on_failure(event)
        return self._on_deadline(event)

    def _start(self, event: StartRound) -> list[Command]:
        if self._started:
            raise ProtocolError("a buffered run starts once; it was started already")
        if event.round_idx < 0:
            raise ProtocolError(f"a buffered run starts at a version >= 0, got {event.round_idx}")
        pool = np.unique(np.asarray(event.available, dtype=np.int64))
        if pool.size < self.buffering.concurrency:
            raise ConfigError(
                f"Buffering.concurrency={self.buffering.concurrency} exceeds the "
                f"{pool.size} available clients"
            )
        self._started, self._pool, self._version = True, pool, event.round_idx
        log.info("buffered run: %d clients in flight", self.buffering.concurrency)
        return [self._send(self.buffering.concurrency)]

    def _send(self, n: int) -> SendModel:
        picks = [self._pick() for _ in range(n)]
        return SendModel(self._version, np.asarray(picks, dtype=np.int64), None)

    def _pick(self) -> int:
        """One idle client, now in flight on the current version."""
        busy = np.fromiter(self._flight, dtype=np.int64, count=len(self._flight))
        idle = np.setdiff1d(self._pool, busy)
        if self.selector is None:
            cid = int(idle[self._rng.integers(idle.size)])
        else:
            chosen = np.asarray(self.selector.select(self._version, idle, 1, self._rng))
            if chosen.size != 1 or not np.isin(chosen, idle).all():
                raise ProtocolError(
                    f"version {self._version}: the selector must choose one idle client, "
                    f"got {chosen.tolist()}"
                )
            cid = int(chosen[0])
        self._flight[cid] = self._version
        return cid

    def _on_update(self, event: UpdateArrived) -> list[Command]:
        cid, sent = event.client_id, self._flight.get(event.client_id)
        if sent is None or (event.version is not None and event.version != sent):
            problem = f"client {cid} is not in flight on version {event.version}"
            log.warning("version %d: rejected update: %s", self._version, problem)
            return [Reject(cid, problem)]
        del self._flight[cid]
        self._step.reports += 1
        rules = self.buffering.fedbuff
        tau, reason = rules.judge(cid, self._version, sent)
        if reason is not None:
            self._step.stale.append(cid)
            return [Reject(cid, reason, late=True), self._send(1)]
        self._step.accepted.append(cid)
        commands: list[Command] = [Accept(cid, event.weight, tau, rules.scale(tau))]
        if len(self._step.accepted) == rules.buffer_size:
            commands.append(self._close(event.arrival_s))
        commands.append(self._send(1))
        return commands

    def _on_failure(self, event: ClientFailed) -> list[Command]:
        if self._flight.pop(event.client_id, None) is None:
            return []  # not in flight: it holds no slot
        self._step.reports += 1
        self._step.failed.append((event.client_id, event.reason))
        log.info("version %d: client %d dropped: %s", self._version, event.client_id, event.reason)
        return [self._send(1)]

    def _on_deadline(self, event: DeadlinePassed) -> list[Command]:
        raise ProtocolError(
            f"DeadlinePassed at {event.now_s}: a buffered run steps every "
            f"{self.buffering.fedbuff.buffer_size} accepted updates, it has no deadline"
        )

    def _close(self, now_s: float) -> CloseRound:
        """The server step: the open step's outcome; the version advances."""
        s = self._step
        outcome = RoundOutcome(
            round_idx=self._version,
            selected=s.reports,
            accepted=tuple(s.accepted),
            failed=tuple(s.failed),
            late=tuple(s.stale),
            end_s=now_s,
            applied=True,
        )
        self._version, self._step = self._version + 1, _Step()
        losses = describe_losses(outcome.failed, (), outcome.selected)
        if losses is not None:  # one warning per step; stale updates warned singly
            log.warning("server step %d: %s", self._version, losses)
        return CloseRound(outcome)
