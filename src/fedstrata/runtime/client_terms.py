"""A client's per-run state across center terms: kept for the same run, rolled back
for a round run again.

A center node (:mod:`fedstrata.runtime.standby`) names each term of a run
``<run name>.<epoch>`` (:func:`~fedstrata.runtime.secagg_failover.term_run_id`). A client
agent that receives a task of a *new run* drops its per-run state (its uplink pipeline
and the error-feedback residual in it): it trains as a fresh client. A task of a *new
term of the same run* (a standby resumed it from the last committed round) keeps that
state, as the simulator's resume keeps the clients' state files, with one correction:
the round that was in flight when the previous center died is run again, and this
client may already have encoded it, moving its residual as if that round's update had
counted. :class:`ResidualTerms` keeps the residual store's contents from before the
last round it encoded and puts them back when that round (or an earlier one) comes
again in a new term, so the residual is the one of the uninterrupted run: the
checkpoint the new term resumed from does not hold that round.

The store is a :class:`~fedstrata.core.state.MemoryStateStore` the agent's pipelines are
built on (one per client; distinct codecs use distinct keys). No gRPC.
"""

from __future__ import annotations

import logging
from typing import Literal

from fedstrata.core.state import MemoryStateStore
from fedstrata.core.statepart import StatePart
from fedstrata.runtime.records import TaskSpec
from fedstrata.runtime.secagg_failover import run_name

__all__ = ["ResidualTerms", "TermChange"]

log = logging.getLogger(__name__)

TermChange = Literal["same", "term", "run"]
"""What a task's run id is to the last one: the same term, a new term of the same run,
or another run."""

_EMPTY = StatePart(meta={"keys": []})


class ResidualTerms:
    """A client's residual store across center terms; see the module docstring.

    Args:
        store: the store the client's uplink pipelines keep their residuals in.
    """

    def __init__(self, store: MemoryStateStore) -> None:
        self.store = store
        self._before: tuple[int, StatePart] | None = None  # (round, store before it)

    @staticmethod
    def change(last_run_id: str | None, run_id: str) -> TermChange:
        """How ``run_id`` relates to ``last_run_id`` (None: no task yet, a new run)."""
        if last_run_id == run_id:
            return "same"
        if last_run_id is not None and run_name(last_run_id) == run_name(run_id):
            return "term"
        return "run"

    def switch(self, last_run_id: str | None, task: TaskSpec) -> bool:
        """``task`` is of another run id than ``last_run_id``: a new term of the same run
        keeps the residuals (:meth:`new_term`), another run resets them
        (:meth:`new_run`). Returns whether they were kept (the pipeline too)."""
        if self.change(last_run_id, task.run_id) == "term":
            self.new_term(task.round_idx)
            return True
        self.new_run()
        return False

    def before_encode(self, round_idx: int) -> None:
        """Round ``round_idx`` is about to be encoded: remember the store as it is."""
        self._before = (round_idx, self.store.state_dict())

    def new_term(self, round_idx: int) -> bool:
        """A new term of the run starts at ``round_idx``: roll the store back to before
        the last round encoded if that round is run again. Returns whether it did."""
        if self._before is None or self._before[0] < round_idx:
            return False
        encoded, state = self._before
        self.store.load_state_dict(state)
        self._before = None
        log.warning(
            "round %d runs again in a new center term: residuals rolled back to before "
            "round %d", round_idx, encoded,
        )  # fmt: skip
        return True

    def new_run(self) -> None:
        """Another run: residuals start afresh."""
        self.store.load_state_dict(_EMPTY)
        self._before = None
