"""The runtime center's checkpoint and its durable acknowledgements (issue 15 part 3).

:class:`CenterSnapshot` is what a center needs to continue a run after a crash: the
model, the round, the server optimizer's state, the run's name and term (the lease
epoch), the participants it had (so the resumed center waits for them), the history of
committed rounds (who was accepted in which round and term: what the chaos harness
counts) and named opaque parts (:class:`StatePart`: the hook for the DP accountant's
state and anything else a component must not lose). It is an ``.npz`` archive with a
versioned JSON header: no pickle.

:class:`RoundCommitter` is the center's :attr:`~fedstrata.runtime.center.Center.after_round`
hook: after every round it writes the snapshot through the checkpoint store
(:class:`SnapshotSink`, i.e. :class:`fedstrata.checkpoint.Checkpointer`), waits until
the durable tier holds it, and only then opens the :class:`AckGate`. An accepted
update's ``SubmitReply(accepted=true)`` waits at that gate, so **an acknowledged
update is always in a committed checkpoint**: a center that dies mid-round loses only
updates it never acknowledged (their senders see a broken call and retry with the
new center). A center that lost its lease (:class:`~fedstrata.runtime.lease.LeaseKeeper`)
neither writes nor acknowledges any more.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.params import FloatVector
from fedstrata.errors import CheckpointCorrupt
from fedstrata.runtime.lease import LeaseLost
from fedstrata.runtime.records import RoundRecord

__all__ = [
    "AckGate",
    "AfterRound",
    "CenterSnapshot",
    "CommittedRound",
    "RoundCommitter",
    "SnapshotSink",
    "StatePart",
]

log = logging.getLogger(__name__)

FORMAT = 1

AfterRound = Callable[[int, RoundRecord, FloatVector, Any], Awaitable[None]]
"""``after_round(round_idx, record, params, opt_state)``: called by ``Center.run``."""


class SnapshotSink(Protocol):
    """Where snapshots go (:class:`fedstrata.checkpoint.Checkpointer` is one)."""

    def snapshot(self, round_num: int, blob: bytes) -> None: ...

    def flush(self) -> None: ...

    def latest(self) -> tuple[Any, bytes] | None: ...


class StatePart(Protocol):
    """A component's state carried in the center's checkpoint (e.g. a DP accountant).

    ``save`` is called after every committed round; ``restore`` once when a center
    resumes from a snapshot that holds this part's ``name``.
    """

    name: str

    def save(self) -> bytes: ...

    def restore(self, blob: bytes) -> None: ...


@dataclass(frozen=True)
class CommittedRound:
    """One committed round: its index, the run term (wire run id) and the accepted ids."""

    round_idx: int
    run_id: str
    accepted: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class CenterSnapshot:
    """A runtime center's state after round ``round_idx``; see the module docstring."""

    round_idx: int
    params: FloatVector
    opt_state: Mapping[str, NDArray[np.generic]]
    run_name: str
    epoch: int
    participants: Mapping[int, int] = field(default_factory=dict)
    history: tuple[CommittedRound, ...] = ()
    parts: Mapping[str, bytes] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        meta = {
            "format": FORMAT,
            "round": self.round_idx,
            "run_name": self.run_name,
            "epoch": self.epoch,
            "participants": {str(k): v for k, v in self.participants.items()},
            "history": [[h.round_idx, h.run_id, list(h.accepted)] for h in self.history],
            "opt": sorted(self.opt_state),
            "parts": list(self.parts),  # members part.0, part.1, ... in this order
        }
        arrays: dict[str, NDArray[np.generic]] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "params": np.asarray(self.params),
        }
        arrays.update({f"opt.{k}": np.asarray(v) for k, v in self.opt_state.items()})
        blobs = enumerate(self.parts.values())
        arrays.update({f"part.{i}": np.frombuffer(v, np.uint8) for i, v in blobs})
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> CenterSnapshot:
        """Inverse of :meth:`to_bytes`.

        Raises:
            CheckpointCorrupt: not such an archive, another format version, or a
                missing or malformed member.
        """
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads(arrays["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise CheckpointCorrupt(f"center snapshot format {meta.get('format')!r}")
            return cls(
                round_idx=int(meta["round"]),
                params=arrays["params"].astype(np.float32, copy=False),
                opt_state={k: arrays[f"opt.{k}"] for k in meta["opt"]},
                run_name=str(meta["run_name"]),
                epoch=int(meta["epoch"]),
                participants={int(k): int(v) for k, v in meta["participants"].items()},
                history=tuple(
                    CommittedRound(int(r), str(i), tuple(a)) for r, i, a in meta["history"]
                ),
                parts={k: arrays[f"part.{i}"].tobytes() for i, k in enumerate(meta["parts"])},
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointCorrupt(f"not a center snapshot: {exc!r}") from None


class AckGate:
    """Holds accepted updates' replies until their round is committed (or refused)."""

    def __init__(self, committed: int = -1) -> None:
        self.committed = committed
        self._voided: dict[int, str] = {}
        self._moved = asyncio.Event()

    async def wait(self, round_idx: int) -> tuple[bool, str]:
        """The reply to an update accepted in ``round_idx``, once that round is
        committed; cancel to give up (the caller's call then breaks: no ack)."""
        while self.committed < round_idx:
            self._moved.clear()
            await self._moved.wait()
        why = self._voided.get(round_idx)
        return (False, why) if why is not None else (True, "")

    def commit(self, round_idx: int, voided: str | None = None) -> None:
        """Round ``round_idx`` is durable (``voided``: it was discarded, say why)."""
        if voided is not None:
            self._voided[round_idx] = f"round {round_idx} voided: {voided}"
        self.committed = max(self.committed, round_idx)
        self._moved.set()


Fence = Callable[[], float]
"""Seconds of lease validity left (<= 0: this center must not write or acknowledge)."""


class RoundCommitter:
    """The ``after_round`` hook of an active center; see the module docstring.

    Args:
        sink: the checkpoint tiers (the durable one shared with the standbys).
        base: the snapshot this term started from (its history, name, epoch).
        participants: the center's participants now (id -> clients reached).
        fence: the lease validity left; a write starts only with ``margin_s`` left.
        parts: extra state carried in every snapshot.
        margin_s: validity a checkpoint write needs to start.
    """

    def __init__(
        self,
        sink: SnapshotSink,
        base: CenterSnapshot,
        *,
        run_id: str,
        participants: Callable[[], Mapping[int, int]],
        fence: Fence,
        parts: Sequence[StatePart] = (),
        margin_s: float = 0.0,
    ) -> None:
        self.sink, self.base, self.run_id = sink, base, run_id
        self.participants, self.fence, self.parts = participants, fence, parts
        self.margin_s = margin_s
        self.gate = AckGate(base.round_idx)
        self.history = list(base.history)
        self.save_s: list[float] = []
        self.on_fenced: Callable[[], Awaitable[None]] | None = None  # e.g. stop serving

    async def __call__(
        self, round_idx: int, record: RoundRecord, params: FloatVector, opt_state: Any
    ) -> None:
        accepted = tuple(int(c) for c in record.outcome.accepted)
        if record.voided is None:
            self.history.append(CommittedRound(round_idx, self.run_id, accepted))
        snap = self.snapshot(round_idx, params, opt_state)
        await self._check_fence(round_idx)
        start = time.perf_counter()
        self.sink.snapshot(round_idx, snap.to_bytes())
        await asyncio.to_thread(self.sink.flush)
        self.save_s.append(time.perf_counter() - start)
        await self._check_fence(round_idx)
        self.gate.commit(round_idx, record.voided)

    def snapshot(self, round_idx: int, params: FloatVector, opt_state: Any) -> CenterSnapshot:
        arrays = opt_state.to_arrays() if hasattr(opt_state, "to_arrays") else {}
        return CenterSnapshot(
            round_idx=round_idx,
            params=params,
            opt_state=arrays,
            run_name=self.base.run_name,
            epoch=self.base.epoch,
            participants=dict(self.participants()),
            history=tuple(self.history),
            parts={p.name: p.save() for p in self.parts},
        )

    async def _check_fence(self, round_idx: int) -> None:
        """Raise :class:`LeaseLost` (after ``on_fenced``: the center stops serving
        before its run ends, so no participant is told the run is over) when the lease
        has less than ``margin_s`` left."""
        left = self.fence()
        if left <= self.margin_s:
            if self.on_fenced is not None:
                await self.on_fenced()
            raise LeaseLost(
                f"round {round_idx}: lease validity {left:.2f} s left (< {self.margin_s} s): "
                "not committing; a standby takes over"
            )
