"""One open round of a runtime center: its uploads, resolution and ordered folding.

:class:`RoundIntake` is created by :class:`~fedstrata.runtime.center.Center` when a
round opens and dropped when it closes. It resolves every cohort member (accepted,
rejected or failed), holds accepted updates in a reorder buffer and folds them in
cohort order (so the sum is formed in the simulator's order), and receives uploads:
buffered and decoded whole, or, for large dense models, folded into the sum chunk by
chunk when the client's cohort turn comes. An upload is bound to this round: one that
completes after the round closed is refused as late and never reaches the coordinator
(which by then runs a later round). The weighting rule, the fold of an update (a
malformed one refused in the simulator's words) and the round's codec figures are the
simulator's (:mod:`fedstrata.coordinator.round_logic`,
:mod:`fedstrata.coordinator.round_metrics`). No gRPC in this module.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, final

from fedstrata.aggregation.mean import MeanState
from fedstrata.aggregation.protocol import Aggregator, check_metrics, check_weight
from fedstrata.coordinator import (
    ClientFailed,
    CloseRound,
    DeadlinePassed,
    Reject,
    RoundCoordinator,
    RoundOutcome,
    UpdateArrived,
)
from fedstrata.coordinator.round_logic import Weighting, client_weight, dense_bytes, fold_update
from fedstrata.coordinator.round_metrics import codec_stats
from fedstrata.coordinator.system_tally import runtime_system
from fedstrata.core.clock import Clock
from fedstrata.core.metrics import precision_stats
from fedstrata.core.payload import Payload
from fedstrata.errors import FedstrataError, PayloadError
from fedstrata.pipeline.stage import Codec
from fedstrata.runtime.partials import CompressedPartial, merge_compressed, read_tier_partial
from fedstrata.runtime.records import (
    CenterSettings,
    HeldUpload,
    OpenRound,
    RoundRecord,
    UploadHeader,
)
from fedstrata.runtime.sched_reports import RoundTimings
from fedstrata.runtime.streaming import DenseFold
from fedstrata.runtime.transport import Reassembler
from fedstrata.secagg import SecAggAggregator
from fedstrata.secagg.ring_input import integer_weight

__all__ = ["RoundIntake", "Settler", "masked_metrics_weight"]

log = logging.getLogger(__name__)

_FAILED = None  # marks a resolved cohort member without a usable update
Rejector = Callable[[int, int, str], str]  # (round, client, reason) -> reason, recorded
Settler = Callable[[int, RoundTimings | None], tuple[float, str | None]]
"""Partial work's settlement of a client's reported steps: (weight factor, refusal)."""


def _accept_all(_cid: int, _timings: RoundTimings | None) -> tuple[float, str | None]:
    return 1.0, None


@final
class RoundIntake:
    """The uploads and the reorder buffer of one open round; see the module docstring.

    Args:
        rnd: the round's state.
        settings: weighting and chunk limits.
        coordinator: the round state machine (of this round).
        aggregator: folds accepted updates.
        codec: decodes client payloads.
        clock: time of the coordinator's events.
        reject: records and logs a refusal; returns the reason.
        settle: partial work's settlement (the center's scheduler,
            :meth:`~fedstrata.runtime.scheduling.CenterScheduler.settle`): an
            update's weight is multiplied by its factor; a straggler is refused.
    """

    def __init__(
        self,
        rnd: OpenRound,
        *,
        settings: CenterSettings,
        coordinator: RoundCoordinator,
        aggregator: Aggregator[Any],
        codec: Codec,
        clock: Clock,
        reject: Rejector,
        settle: Settler | None = None,
    ) -> None:
        self.rnd, self.settings, self.coordinator = rnd, settings, coordinator
        self.aggregator, self.codec, self.clock, self.reject = aggregator, codec, clock, reject
        self.settle: Settler = settle or _accept_all

    # ---- resolution and ordered folding --------------------------------------------

    def fail(self, cid: int, reason: str) -> None:
        """Fail ``cid`` in this round (a closed round's outcome is final)."""
        rnd = self.rnd
        if cid in rnd.resolved or rnd.closed:
            return
        rnd.failed_at.append(self.clock.now())
        self.coordinator.handle(ClientFailed(cid, reason))
        rnd.resolved[cid] = _FAILED
        self.fold_ready()
        self.check_done()

    def record(self, outcome: RoundOutcome, client_means: Mapping[str, float]) -> RoundRecord:
        """The closed round's record: its outcome, bytes, mean training loss and codec
        figures (the simulator's, :func:`~fedstrata.coordinator.round_metrics.codec_stats`)."""
        rnd = self.rnd
        codec = codec_stats(
            uploads=rnd.uploads, size=rnd.size, bytes_up=rnd.bytes_up,
            bytes_down=rnd.bytes_down, receivers=len(rnd.cohort), decode_s=rnd.decode_s,
            client_means=client_means,
        )  # fmt: skip
        loss = client_means.get("train_loss")
        precision = precision_stats(rnd.folded_metrics)
        system = runtime_system(
            len(rnd.cohort), dense_bytes(rnd.size) * (len(rnd.cohort) + rnd.uploads),
            failed_at=rnd.failed_at, accepted_at=rnd.accepted_at,
        )  # fmt: skip
        return RoundRecord(
            outcome, rnd.bytes_up, rnd.bytes_down, loss, rnd.void, codec, precision, system,
            tier_clients=dict(rnd.tier_clients),
        )  # fmt: skip

    def close(self, now_s: float) -> RoundRecord:
        """Close the round at ``now_s``: fold what is resolved in cohort order (an upload
        still streaming voids a streamed round), tell the coordinator, and return the
        round's record."""
        rnd = self.rnd
        rnd.closed = True
        if rnd.in_flight is not None:
            self.void(f"upload of client {rnd.in_flight} still streaming at the close")
        self.fold_ready(final=True)
        (close,) = self.coordinator.handle(DeadlinePassed(now_s))
        assert isinstance(close, CloseRound)
        out = close.outcome
        log.info(
            "round %d: %d accepted, %d failed, %d late",
            rnd.round_idx, len(out.accepted), len(out.failed), len(out.late),
        )  # fmt: skip
        return self.record(out, self.aggregator.finalize_metrics(rnd.state))

    def check_done(self) -> None:
        if len(self.rnd.resolved) >= len(self.rnd.cohort):
            self.rnd.done.set()

    def void(self, reason: str) -> None:
        """Discard the round's aggregate (the model stays unchanged)."""
        if self.rnd.void is None:
            log.warning(
                "round %d: aggregate voided, model unchanged: %s", self.rnd.round_idx, reason
            )
            self.rnd.void = reason

    def fold_ready(self, *, final: bool = False) -> None:
        """Fold resolved updates in cohort order; at the close, skip the unresolved."""
        rnd = self.rnd
        while rnd.next_fold < len(rnd.cohort):
            cid = rnd.cohort[rnd.next_fold]
            if cid not in rnd.resolved and not final:
                return
            entry = rnd.resolved.get(cid, _FAILED)
            rnd.next_fold += 1
            rnd.turn.set()
            if entry is not None:
                self._fold_one(cid, entry)

    def _fold_one(self, cid: int, held: HeldUpload) -> None:
        rnd = self.rnd
        try:
            if isinstance(held.payload, MeanState):
                rnd.state = self.aggregator.merge(rnd.state, held.payload)
            elif isinstance(held.payload, CompressedPartial):  # a tier's re-compressed mean
                rnd.state = merge_compressed(
                    rnd.state, held.payload, cid, self.aggregator, size=rnd.size
                )
            else:
                rnd.state, decode_s = fold_update(
                    self.aggregator, rnd.state, held.payload, held.weight, self.codec,
                    client_id=cid, metrics=held.metrics,
                )  # fmt: skip
                rnd.decode_s += decode_s
                rnd.folded_metrics.append(held.metrics)
        except FedstrataError as exc:  # malformed: dropped, the sum is untouched
            self.reject(rnd.round_idx, cid, f"update unusable: {exc}")
            self.coordinator.handle(ClientFailed(cid, str(exc)))
        rnd.resolved[cid] = _FAILED  # release the buffered payload

    def _resolve(self, cid: int) -> None:
        """Mark ``cid`` resolved with nothing left to fold."""
        self.rnd.resolved[cid] = _FAILED
        self.fold_ready()
        self.check_done()

    # ---- uploads ---------------------------------------------------------------------

    async def submit(self, header: UploadHeader, chunks: AsyncIterator[bytes]) -> tuple[bool, str]:
        """Receive one checked upload; returns (accepted, reason)."""
        rnd, cid = self.rnd, header.client_id
        rnd.submitted.add(cid)
        if rnd.streamed and not header.partial:
            return await self._submit_streamed(header, chunks)
        try:
            reassembler = Reassembler(header.total_bytes, self.settings.chunks.max_total_bytes)
            async for chunk in chunks:
                reassembler.add(chunk)
            if header.partial:
                return self._partial_arrived(header, reassembler.data())
            payload = reassembler.payload()
        except FedstrataError as exc:
            self.reject(rnd.round_idx, cid, str(exc))
            self.fail(cid, f"bad upload: {exc}")
            return False, str(exc)
        except BaseException:  # the stream broke (client gone, call cancelled)
            self.fail(cid, "upload interrupted")
            raise
        return self._arrived(header, payload)

    async def _submit_streamed(
        self, header: UploadHeader, chunks: AsyncIterator[bytes]
    ) -> tuple[bool, str]:
        """Fold a dense upload into the sum as it arrives, when its cohort turn comes.

        Until then its stream is left unread (gRPC flow control holds the sender).
        """
        rnd, cid = self.rnd, header.client_id
        position = rnd.cohort.index(cid)
        while rnd.next_fold < position and not rnd.closed and cid not in rnd.resolved:
            rnd.turn.clear()
            await rnd.turn.wait()
        if rnd.closed or cid in rnd.resolved:
            return False, self.reject(rnd.round_idx, cid, "round resolved before its turn")
        factor, straggler = self.settle(cid, header.timings)
        if straggler is not None:
            return self._straggler(cid, straggler)
        weight = client_weight(header.num_examples, self.settings.weighting) * factor
        (cmd,) = self.coordinator.handle(UpdateArrived(cid, self.clock.now(), weight))
        if isinstance(cmd, Reject):
            rnd.failed_at.append(self.clock.now())
            self._resolve(cid)
            return False, self.reject(rnd.round_idx, cid, cmd.reason)
        rnd.accepted_at.append(self.clock.now())
        fold: DenseFold | None = None
        try:
            metrics = check_metrics(header.metrics, cid)
            fold = DenseFold(rnd.state.weighted_sum, check_weight(weight, cid), header.total_bytes)
            rnd.in_flight = cid
            async for chunk in chunks:
                if rnd.closed:
                    break
                fold.add(chunk)
            if rnd.closed:
                raise PayloadError("the round closed during the upload")
            rnd.bytes_up += fold.finish()
            rnd.uploads += 1
        except FedstrataError as exc:
            self._stream_failed(cid, f"bad upload: {exc}", fold)
            return False, self.reject(rnd.round_idx, cid, str(exc))
        except BaseException:  # the stream broke (client gone, call cancelled)
            self._stream_failed(cid, "upload interrupted", fold)
            raise
        finally:
            rnd.in_flight = None
        state = rnd.state
        state.total_weight += fold.weight
        state.count += 1
        state.metrics.add(metrics, fold.weight)
        rnd.folded_metrics.append(metrics)
        self._resolve(cid)
        return True, ""

    def _stream_failed(self, cid: int, reason: str, fold: DenseFold | None) -> None:
        if fold is not None and fold.touched:
            self.void(f"client {cid}: {reason} after part of it was summed")
        self.fail(cid, reason)

    def accept_masked(self, header: UploadHeader, nbytes: int) -> str | None:
        """A masked input of secure aggregation counts as ``header.client_id``'s update.

        It was summed into the protocol's sum (``secagg_session.py``), so nothing is
        folded here; its weight is inside the masked vector (the coordinator counts 1),
        with partial work's factor folded in by the client (the center settles the
        steps it reports for its records). The metrics travel outside the protocol and
        enter the round's means with the weight the simulator gives them
        (:func:`masked_metrics_weight`). Returns why the coordinator refused it, or None.
        """
        rnd, cid = self.rnd, header.client_id
        rnd.submitted.add(cid)
        rnd.bytes_up += nbytes
        rnd.uploads += 1
        factor, straggler = self.settle(cid, header.timings)
        if straggler is not None:  # summed already: the protocol cannot take it out
            log.warning("round %d: client %d: %s (masked input kept)", rnd.round_idx, cid,
                        straggler)  # fmt: skip
        (cmd,) = self.coordinator.handle(UpdateArrived(cid, self.clock.now(), 1.0))
        if isinstance(cmd, Reject):
            self._resolve(cid)
            return self.reject(rnd.round_idx, cid, cmd.reason)
        metrics = check_metrics(header.metrics, cid)
        weight = masked_metrics_weight(
            self.aggregator, header.num_examples, self.settings.weighting, factor, cid
        )
        rnd.state.metrics.add(metrics, weight)
        rnd.folded_metrics.append(metrics)
        self._resolve(cid)
        return None

    def _straggler(self, cid: int, why: str) -> tuple[bool, str]:
        """Refuse too little partial work (the simulator's straggler: nothing folded)."""
        self.rnd.failed_at.append(self.clock.now())
        self.coordinator.handle(ClientFailed(cid, why))
        self._resolve(cid)
        return False, self.reject(self.rnd.round_idx, cid, why)

    def _late(self, cid: int) -> str:
        idx = self.rnd.round_idx
        return self.reject(idx, cid, f"late: round {idx} closed before the upload completed")

    def _partial_arrived(self, header: UploadHeader, data: bytes) -> tuple[bool, str]:
        rnd, cid = self.rnd, header.client_id
        if rnd.closed:
            return False, self._late(cid)
        partial, clients = read_tier_partial(data)
        if clients is not None:  # the tier's accepted clients (tier_combos.py)
            rnd.tier_clients[cid] = clients
        if partial.count == 0 or partial.total_weight <= 0:
            self.fail(cid, "empty partial aggregate")
            return False, self.reject(rnd.round_idx, cid, "empty partial")
        return self._arrived(header, partial, len(data), partial.total_weight)

    def _arrived(
        self,
        header: UploadHeader,
        payload: Payload | MeanState | CompressedPartial,
        nbytes: int | None = None,
        weight: float | None = None,
    ) -> tuple[bool, str]:
        rnd, cid = self.rnd, header.client_id
        if rnd.closed:  # the upload outlived its round: the coordinator has moved on
            return False, self._late(cid)
        rnd.bytes_up += payload.nbytes if isinstance(payload, Payload) else (nbytes or 0)
        rnd.uploads += 1
        if weight is None:
            factor, straggler = self.settle(cid, header.timings)
            if straggler is not None:
                return self._straggler(cid, straggler)
            weight = client_weight(header.num_examples, self.settings.weighting) * factor
        (cmd,) = self.coordinator.handle(UpdateArrived(cid, self.clock.now(), weight))
        if isinstance(cmd, Reject):
            rnd.failed_at.append(self.clock.now())
            self._resolve(cid)
            return False, self.reject(rnd.round_idx, cid, cmd.reason)
        rnd.accepted_at.append(self.clock.now())
        rnd.resolved[cid] = HeldUpload(payload, weight, dict(header.metrics))
        self.fold_ready()
        self.check_done()
        return True, ""


def masked_metrics_weight(
    aggregator: Aggregator[Any], num_examples: int, weighting: Weighting, factor: float, cid: int
) -> float:
    """The weight of a masked input's metrics in the round's means: the simulator's
    (the secure aggregator's integer weight of ``client_weight * factor``), as a
    plaintext update's metrics weigh with its fold weight. 1 when the input carried no
    examples (an older client, or an edge's cluster sum).
    """
    if num_examples <= 0:
        return 1.0
    weight = client_weight(num_examples, weighting) * factor
    if not isinstance(aggregator, SecAggAggregator):
        return weight
    o = aggregator.options
    w, _ = integer_weight(
        weight, o.max_weight, cid, rounding=o.round_weights, scale=o.weight_scale
    )
    return float(w)
