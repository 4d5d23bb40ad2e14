"""Federated evaluation in the deployment runtime (``evaluation.every``; docs/runtime.md).

As in the simulator (:mod:`fedstrata.sim.fedeval`), every ``evaluation.every`` rounds
and after the last, a seeded sample of the clients holding evaluation data evaluates
the round's final global model on its own held-out data; the sample, a client's
metrics and the statistics are the shared rules of :mod:`fedstrata.coordinator.fedeval`,
so a deployment reports the simulator's :class:`~fedstrata.monitoring.FedEvalMetrics`
for the same configuration and seed.

When: after round ``r``'s server step, before round ``r + 1`` starts, the center asks
the round's sample to evaluate the model round ``r`` produced (the model each of them
receives next; the simulator charges no simulated time for it, and the center waits
for the answers at most ``rounds.deadline_s``). The evaluation never changes the model
or the training cohort of any round. Under FedBuff a round is a server step: the
buffered center evaluates a copy of each due step's model in the background
(:meth:`EvalDesk.later`, one evaluation after another) and drains them before it ends
the run.

The wire: an ``EVALUATE`` task names the round; the client downloads that round's dense
model (a ``Download`` with ``evaluation`` set: full float32, whatever the downlink
compression, as the simulator evaluates the exact model), evaluates it and submits an
``EvalReport`` (a ``Submit`` with ``evaluation`` set) with its examples and metrics, or
the reason its evaluation failed. Aggregator tiers relay: a tier gets the task with the
sampled clients' ids, asks those of them it serves (its own :class:`EvalDesk`; a
region asks its tiers the same way) and reports their results in one ``EvalReport``.

Failures: a sampled client that is not connected, leaves, reports an error or misses
the deadline is counted in ``clients_failed`` with its reason (a
:class:`~fedstrata.monitoring.ClientFailure` prefixed ``federated evaluation:``); the
run goes on.

Ownership: a :class:`EvalDesk` belongs to one :class:`~fedstrata.runtime.center.Center`
(``center.evaluation``); at most one evaluation is open at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from fedstrata.coordinator.fedeval import FedEvalSettings, evaluation_sample, fed_eval_event
from fedstrata.core.params import FloatVector
from fedstrata.errors import DataError, ProtocolError
from fedstrata.monitoring import ClientEval, ClientFailure, FedEvalMetrics
from fedstrata.runtime.records import RoundRecord, TaskKind, TaskSpec
from fedstrata.runtime.streaming import Broadcast, paced

if TYPE_CHECKING:
    from fedstrata.runtime.center import Center

__all__ = ["EvalDesk", "EvalEntry", "EvalPlan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalEntry:
    """One client's answer to an ``EVALUATE`` task: its result, or why it failed."""

    client_id: int
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, eq=False)
class EvalPlan:
    """The center's cadence and sample (None on a tier, which only relays).

    Attributes:
        settings: cadence, sample size and seed
            (:func:`fedstrata.builders_fedeval.fed_eval_settings`).
        eligible: the clients holding evaluation data, sorted.
        rounds: the run's rounds, or a FedBuff run's server steps (the last is always
            evaluated).
    """

    settings: FedEvalSettings
    eligible: NDArray[np.intp]
    rounds: int


@dataclass(eq=False)
class _Open:
    """The open evaluation at one center."""

    round_idx: int
    run_id: str
    model: Broadcast
    clients: frozenset[int]
    waiting: set[int]  # sessions (clients or tiers) whose report is awaited
    direct: set[int]  # clients asked directly
    results: dict[int, ClientEval] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def resolved(self, cid: int) -> bool:
        return cid in self.results or cid in self.failures

    def settle(self, cid: int) -> None:
        self.waiting.discard(cid)
        if not self.waiting:
            self.done.set()


class EvalDesk:
    """A center's federated evaluations (see the module docstring).

    Args:
        center: the center whose sessions it asks.
        plan: the cadence and sample (None: a tier's desk, which only relays).
        timeout_s: how long an evaluation waits for its answers (None: until every
            asked session answered or left).
    """

    def __init__(
        self, center: Center, plan: EvalPlan | None = None, timeout_s: float | None = None
    ) -> None:
        self.center, self.plan, self.timeout_s = center, plan, timeout_s
        self._sessions: dict[int, bool] = {}  # connected session -> is an aggregator tier
        self._open: _Open | None = None
        self._pending: asyncio.Future[None] | None = None  # scheduled by later()
        self.history: list[FedEvalMetrics] = []  # every evaluation, in order
        self.failures: list[ClientFailure] = []  # their failed clients

    # ---- the center's hooks ----------------------------------------------------------

    def joined(self, session_id: int, *, tier: bool) -> None:
        """A session opened (``tier``: an aggregator tier, which said it reaches clients)."""
        self._sessions[session_id] = tier

    def served(self, clients: Collection[int]) -> list[int]:
        """Those of ``clients`` connected here directly."""
        return sorted(c for c in clients if self._sessions.get(c) is False)

    def gone(self, session_id: int) -> None:
        """A session ended: a client asked directly fails; a tier's clients stay
        unresolved (failed at the center when nobody else reports them)."""
        self._sessions.pop(session_id, None)
        ask = self._open
        if ask is None or session_id not in ask.waiting:
            return
        if session_id in ask.direct and not ask.resolved(session_id):
            ask.failures[session_id] = "disconnected during the evaluation"
        ask.settle(session_id)

    async def after_round(
        self, round_idx: int, params: FloatVector, record: RoundRecord
    ) -> RoundRecord:
        """The center's evaluation after ``round_idx`` when due: ``record`` with the
        round's :class:`~fedstrata.monitoring.FedEvalMetrics` and failed clients."""
        done = await self.evaluate(round_idx, params)
        if done is None:
            return record
        return dataclasses.replace(record, fed_eval=done[0], fed_eval_failures=done[1])

    def later(self, round_idx: int, params: FloatVector) -> None:
        """Evaluate a copy of ``params`` after ``round_idx`` (a FedBuff server step) in
        the background, after the evaluations already scheduled; :meth:`drain` awaits
        them."""
        if self.plan is None or not self.plan.settings.due(round_idx, self._last(round_idx)):
            return
        snapshot = np.array(params, dtype=np.float32, copy=True)
        previous = self._pending

        async def chained() -> None:
            if previous is not None:
                await previous
            await self.evaluate(round_idx, snapshot)

        self._pending = asyncio.ensure_future(chained())

    async def drain(self) -> None:
        """Wait for the evaluations :meth:`later` scheduled."""
        if self._pending is not None:
            await self._pending

    def _last(self, round_idx: int) -> bool:
        return self.plan is not None and round_idx == self.plan.rounds - 1

    async def evaluate(
        self, round_idx: int, params: FloatVector
    ) -> tuple[FedEvalMetrics, tuple[ClientFailure, ...]] | None:
        """The evaluation of ``params`` after ``round_idx`` when due (None: not due, or
        a tier's desk); kept in :attr:`history`."""
        plan = self.plan
        if plan is None or not plan.settings.due(round_idx, self._last(round_idx)):
            return None
        start = time.perf_counter()
        ids = [int(c) for c in evaluation_sample(plan.settings, plan.eligible, round_idx)]
        model = Broadcast.of_model(np.array(params, dtype=np.float32, copy=True))
        results, failures = await self.ask(round_idx, model, ids, self.center.run_id)
        wall_s = time.perf_counter() - start
        fails = sorted(failures.items())
        event, failed = fed_eval_event(
            round_idx, len(ids), list(results.values()), fails, wall_s=wall_s
        )
        log.info(
            "round %d: federated evaluation on %d clients (%d failed): %s",
            round_idx, len(ids), len(failed), event.headline(),
        )  # fmt: skip
        self.history.append(event)
        self.failures.extend(failed)
        return event, failed

    async def ask(
        self,
        round_idx: int,
        model: Broadcast,
        clients: Sequence[int],
        run_id: str,
        *,
        served_only: bool = False,
    ) -> tuple[dict[int, ClientEval], dict[int, str]]:
        """Ask ``clients`` to evaluate ``model`` (round ``round_idx`` of ``run_id``).

        Connected clients among them get an ``EVALUATE`` task; every connected tier
        gets it with the list of ``clients``. ``served_only`` (a tier): the clients
        neither connected here nor reported by a tier below are left out of the answer
        (other tiers serve them) instead of failed.

        Returns:
            ``(results, failures)`` by client id.
        """
        wanted = frozenset(clients)
        tiers = [s for s, tier in self._sessions.items() if tier]
        direct = set(self.served(wanted))
        ask = _Open(round_idx, run_id, model, wanted, set(), set())
        self._open = ask
        deadline = self.timeout_s
        for sid in sorted(direct) + sorted(tiers):
            relayed = tuple(sorted(wanted)) if sid in tiers else ()
            task = TaskSpec(
                TaskKind.EVALUATE, round_idx, deadline_s=deadline, model_bytes=model.nbytes,
                run_id=run_id, eval_clients=relayed,
            )  # fmt: skip
            if self.center.push(sid, task):
                ask.waiting.add(sid)
                if sid in direct:
                    ask.direct.add(sid)
        if ask.waiting:
            await self._wait(ask)
        self._open = None
        for cid in sorted(wanted):
            if ask.resolved(cid):
                continue
            if cid in ask.direct:
                ask.failures[cid] = "no result by the evaluation's deadline"
            elif not served_only:
                ask.failures[cid] = "not connected (no session reaches it)"
        return ask.results, ask.failures

    async def _wait(self, ask: _Open) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await ask.done.wait()
        except TimeoutError:
            log.warning(
                "round %d: federated evaluation deadline passed; waiting for %s",
                ask.round_idx, sorted(ask.waiting),
            )  # fmt: skip

    # ---- transport entry points ------------------------------------------------------

    def download(
        self, client_id: int, round_idx: int, run_id: str
    ) -> tuple[int, AsyncIterator[bytes]]:
        """The dense model of the open evaluation for a session that was asked.

        Raises:
            ProtocolError: no such open evaluation, or the session was not asked.
        """
        ask = self._open
        if ask is None or ask.round_idx != round_idx or ask.run_id != run_id:
            raise ProtocolError(f"no federated evaluation of round {round_idx} is open")
        if client_id not in ask.waiting:
            raise ProtocolError(f"session {client_id} was not asked to evaluate round {round_idx}")
        chunks = self.center.settings.chunks.chunk_bytes
        return ask.model.nbytes, paced(ask.model.chunks(chunks))

    def submit(
        self, session_id: int, round_idx: int, run_id: str, entries: Collection[EvalEntry]
    ) -> tuple[bool, str]:
        """A session's answer to the open evaluation; returns (accepted, reason).

        A client answers for itself (one entry); a tier for the asked clients it
        serves (entries for other clients are ignored).
        """
        ask = self._open
        if ask is None or ask.round_idx != round_idx or ask.run_id != run_id:
            return False, f"no federated evaluation of round {round_idx} is open"
        if session_id not in ask.waiting:
            return False, f"session {session_id} was not asked or already answered"
        if session_id in ask.direct and [e.client_id for e in entries] != [session_id]:
            ask.failures[session_id] = "its report is not its own result"
            ask.settle(session_id)
            return False, ask.failures[session_id]
        for entry in entries:
            if entry.client_id in ask.clients and not ask.resolved(entry.client_id):
                self._record(ask, entry)
        ask.settle(session_id)
        return True, ""

    def refuse(self, session_id: int, round_idx: int, run_id: str, why: str) -> tuple[bool, str]:
        """A session's unreadable answer: a client asked directly fails with ``why``; a
        tier's clients stay unresolved (failed at the center). Returns (False, reason)."""
        ask = self._open
        if ask is None or ask.round_idx != round_idx or ask.run_id != run_id:
            return False, f"no federated evaluation of round {round_idx} is open"
        if session_id in ask.waiting:
            if session_id in ask.direct and not ask.resolved(session_id):
                ask.failures[session_id] = f"unreadable report: {why}"
            ask.settle(session_id)
        return False, why

    @staticmethod
    def _record(ask: _Open, entry: EvalEntry) -> None:
        if entry.error:
            ask.failures[entry.client_id] = entry.error
            return
        try:
            ask.results[entry.client_id] = ClientEval(
                entry.client_id, entry.num_examples, dict(entry.metrics)
            )
        except DataError as exc:  # a malformed result counts as a failure
            ask.failures[entry.client_id] = f"malformed result: {exc}"
