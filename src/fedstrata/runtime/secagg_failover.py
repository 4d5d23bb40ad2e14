"""Secure aggregation across center terms: what a failover must carry and refuse.

A runtime center that checkpoints as a center node (:mod:`fedstrata.runtime.standby`)
commits every round; a standby that takes over resumes after the last committed round
in a new *term* (wire run id ``<run name>.<epoch>``, :func:`term_run_id`). Under
secure aggregation (and distributed DP with it) the state that spans rounds is small,
because the protocol starts afresh each round (new keys, new masks, new shares):

* **at the center**: the DP budget (the allocator and its accountant:
  :class:`~fedstrata.runtime.dp_center.DpPart`, already a checkpoint part) and the
  secure aggregator's record of withheld and lost rounds (:class:`SecAggPart`, the
  simulator's ``SecAggAggregator.state_dict``). Distributed DP's noise shares are a
  fixed plan of the configuration (``NoiseShares.share_stds``) and each client's
  share is drawn from ``(root seed, round, client)``: nothing to save. The protocol
  state of the round in flight is never saved: that round is **abandoned** with the
  center that ran it and run again from the start by the next term (new keys, new
  masks), never resumed or partially unmasked.
* **at a client**: no protocol state spans rounds; its uplink pipeline (clip, noise
  share, ring codec) holds none but an error-feedback residual, which the client keeps
  across the terms of a run (:mod:`fedstrata.runtime.client_terms`).

Running a round again must not release a client's update twice. The previous center
may have unmasked the round's sum before it died (it had every survivor's unmasking
share), and a second sum over the same inputs with the same noise shares, less or
more some clients, would reveal their difference almost without noise. So a client
that sent its masked input of round ``r`` to one term of a run sends none for ``r``
to a later term (:class:`InputLedger`): it takes part in the key agreement and then
withdraws, as a straggler does. Each client's input is in at most one released sum
per round, which the accountant charges once: the run's ε stays the uninterrupted
run's. A failover between rounds (the common case: a round is short next to the
gaps between them, and the checkpoint is written before the next round opens)
loses nothing; one that comes after masked inputs of the open round went out loses
those clients' work of that round (the rerun may then fall under the survivors'
minimum and be withheld, as the simulator withholds it).

No gRPC in this module.
"""

from __future__ import annotations

import json
import logging

from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt
from fedstrata.secagg import SecAggAggregator

__all__ = ["InputLedger", "SecAggPart", "run_name", "term_run_id"]

log = logging.getLogger(__name__)

_KEEP_ROUNDS = 16  # a rerun is of the last round a client sent: a few suffice


def term_run_id(name: str, epoch: int) -> str:
    """The wire run id of term ``epoch`` of run ``name`` (a center node's)."""
    return f"{name}.{epoch}"


def run_name(run_id: str) -> str:
    """The run a wire run id belongs to: ``name`` of ``name.epoch``; a center without
    terms (no failover) names its run by its id alone."""
    name, dot, epoch = run_id.rpartition(".")
    return name if dot and epoch.isdigit() else run_id


class InputLedger:
    """The rounds of the current run whose masked input this client sent (any term).

    :meth:`refusal` says why a task of a later term must not send round ``r``'s input
    again (module docstring); :meth:`record` notes an input about to leave.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self.rounds: list[int] = []

    def refusal(self, run_id: str, round_idx: int) -> str | None:
        """Why this client sends no masked input for ``round_idx`` of term ``run_id``
        (None: it may)."""
        if run_name(run_id) != self.name or round_idx not in self.rounds:
            return None
        return (
            f"round {round_idx}: its masked input already went to an earlier center of "
            f"run {self.name}, which may have unmasked that sum; not sent again (a second "
            "sum over the same inputs and noise would reveal the difference)"
        )

    def record(self, run_id: str, round_idx: int) -> None:
        """The masked input of ``round_idx`` of term ``run_id`` is about to be sent."""
        name = run_name(run_id)
        if name != self.name:
            self.name, self.rounds = name, []
        if round_idx not in self.rounds:
            self.rounds = [*self.rounds[-(_KEEP_ROUNDS - 1) :], round_idx]


class SecAggPart:
    """The secure aggregator's record (withheld and lost rounds) as a center
    checkpoint part (:class:`~fedstrata.runtime.failover.StatePart`), JSON."""

    name = "secagg"

    def __init__(self, aggregator: SecAggAggregator) -> None:
        self.aggregator = aggregator

    def save(self) -> bytes:
        return json.dumps(dict(self.aggregator.state_dict().meta)).encode()

    def restore(self, blob: bytes) -> None:
        """Raises: CheckpointCorrupt: not a secure aggregator's record."""
        try:
            meta = json.loads(blob)
            self.aggregator.load_state_dict(StatePart(meta=meta))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointCorrupt(f"the center checkpoint's secagg part: {exc!r}") from None
