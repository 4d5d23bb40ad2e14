"""Messages, settings and round records of the runtime center (no I/O)."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from fedstrata.aggregation.mean import MeanState
from fedstrata.coordinator import RoundOutcome
from fedstrata.coordinator.round_logic import Weighting, dense_bytes
from fedstrata.core.metrics import (
    CodecStats,
    PrecisionStats,
    PrivacySpent,
    ScheduleStats,
    SystemStats,
)
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.core.training import LocalPlan
from fedstrata.errors import ConfigError, PayloadError
from fedstrata.monitoring import ClientFailure, FedEvalMetrics
from fedstrata.runtime.partials import CLIENTS_KEY, CompressedPartial
from fedstrata.runtime.sched_reports import DeviceReport, PartialWork, RoundTimings
from fedstrata.runtime.streaming import Broadcast
from fedstrata.runtime.tier_work import MemberReport, TierWork
from fedstrata.runtime.transport import ChunkPlan

__all__ = [
    "CenterSettings",
    "RoundRecord",
    "RuntimeResult",
    "TaskKind",
    "TaskSpec",
    "UploadHeader",
    "decode_partial",
    "dense_update_limit",
    "encode_partial",
    "submission_problem",
]

log = logging.getLogger(__name__)


class TaskKind(Enum):
    TRAIN = "train"
    DONE = "done"
    EVALUATE = "evaluate"  # federated evaluation of a round's model (runtime/fedeval.py)


@dataclass(frozen=True)
class TaskSpec:
    """What the center asks of a client: train in a round, or stop."""

    kind: TaskKind
    round_idx: int = -1
    root_seed: int = 0
    plan: LocalPlan | None = None
    deadline_s: float | None = None
    model_bytes: int = 0
    run_id: str = ""
    partial: PartialWork | None = None  # settle partial work at the deadline (settle.py)
    work: TierWork | None = None  # an explicit tree's scheduled cohort (tier_sched.py)
    eval_clients: tuple[int, ...] = ()  # EVALUATE to a tier: the clients asked (fedeval.py)


@dataclass(frozen=True)
class UploadHeader:
    """The first message of a submission.

    ``run_id`` binds it to one run and ``round_idx`` to one round of it; a tier's
    partial also carries ``live_clients``, its connected clients when it submitted.
    """

    client_id: int
    round_idx: int
    total_bytes: int
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    partial: bool = False
    run_id: str = ""
    live_clients: int = 0
    timings: RoundTimings | None = None  # scheduling: the client's measured round
    secagg_phase: int = 0  # a secure-aggregation step (secagg_wire.Phase), 0: none
    support_seed: int = 0  # a masked input's random-k support seed
    reports: tuple[MemberReport, ...] = ()  # an edge's cohort members (tier_sched.py)
    profiles: tuple[tuple[int, DeviceReport], ...] = ()  # ... and its clients' devices
    evaluation: bool = False  # federated evaluation results (runtime/fedeval.py)


@dataclass(frozen=True)
class CenterSettings:
    """How the center runs.

    Attributes:
        rounds: rounds to run.
        plan: the local training plan sent to clients.
        root_seed: the run's root seed (clients derive their randomness from it).
        min_available: the quorum: reachable clients (a tier counts the clients it
            reports) needed before a round starts (``rounds.min_clients``).
        weighting: ``examples`` (FedAvg) or ``uniform``.
        chunks: chunk size and the largest accepted transfer.
        round_timeout_s: real seconds a round waits for its cohort (None: no deadline).
        start_clients: participants the first round waits for, at most
            ``start_timeout_s`` (None: none); then it starts with whoever is live once
            the quorum is reached. Later rounds wait for the quorum only.
        start_timeout_s: seconds the first round waits for ``start_clients``; also how
            often a wait for the quorum is logged (None: no limit).
        stream_min_bytes: models of at least this many float32 bytes are aggregated
            streaming (None: never): a float32 running sum, dense uploads folded chunk
            by chunk in cohort order, finalize and FedAvg applied in place. Needs the
            ``mean`` aggregator and dense uploads; see ``docs/runtime.md``.
    """

    rounds: int
    plan: LocalPlan
    root_seed: int = 0
    min_available: int = 1
    weighting: Weighting = "examples"
    chunks: ChunkPlan = field(default_factory=ChunkPlan)
    round_timeout_s: float | None = None
    start_clients: int | None = None
    start_timeout_s: float | None = 60.0
    stream_min_bytes: int | None = 64 << 20

    def __post_init__(self) -> None:
        if self.stream_min_bytes is not None and self.stream_min_bytes < 1:
            raise ConfigError(
                "CenterSettings.stream_min_bytes must be >= 1 or None, "
                f"got {self.stream_min_bytes}"
            )
        if self.rounds < 1:
            raise ConfigError(f"CenterSettings.rounds must be >= 1, got {self.rounds}")
        if self.min_available < 1:
            raise ConfigError(
                f"CenterSettings.min_available must be >= 1, got {self.min_available}"
            )
        if self.start_timeout_s is not None and self.start_timeout_s <= 0:
            raise ConfigError(
                f"CenterSettings.start_timeout_s must be > 0, got {self.start_timeout_s}"
            )
        if self.round_timeout_s is not None and self.round_timeout_s <= 0:
            raise ConfigError(
                f"CenterSettings.round_timeout_s must be > 0, got {self.round_timeout_s}"
            )


@dataclass(frozen=True)
class RoundRecord:
    """One finished round: its outcome and the bytes it moved.

    ``voided``: why a streamed round's aggregate was discarded (an upload broke after
    it touched the sum); the model is then unchanged although ``outcome.applied``.
    ``codec``: the round's codec figures (:func:`fedstrata.coordinator.round_logic.codec_stats`).
    ``precision``: fp16 loss scaling's skipped steps (None without loss scaling).
    ``system``: the cohort, bytes and failure/recovery times (the twelve metrics; the
    center measures no device busy time or link capacity: those fields are NaN/None).
    ``privacy``: the DP accountant's record of the round (None without DP).
    """

    outcome: RoundOutcome
    bytes_up: int
    bytes_down: int
    train_loss: float | None
    voided: str | None = None
    codec: CodecStats | None = None
    precision: PrecisionStats | None = None
    system: SystemStats | None = None
    schedule: ScheduleStats | None = None  # the scheduler's figures of the round
    privacy: PrivacySpent | None = None
    # aggregator tiers (runtime/tier_combos.py): the clients each accepted tier reported,
    # and the round over the tiers' clients (the simulator's outcome, min_clients)
    tier_clients: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    clients: RoundOutcome | None = None
    fed_eval: FedEvalMetrics | None = None  # the round's federated evaluation (fedeval.py)
    fed_eval_failures: tuple[ClientFailure, ...] = ()  # its failed clients


@dataclass
class RuntimeResult:
    """The final model, per-round records and every rejected call (with its reason).

    ``run_dir``: where the center wrote its run directory (None: not written).
    ``stopped_reason``: why the run stopped before its last round (the privacy budget),
    or None. ``fed_evals``: the run's federated evaluations in order (the simulator's
    ``SimulationResult.fed_evals``).
    """

    params: FloatVector
    rounds: list[RoundRecord] = field(default_factory=list)
    rejections: list[tuple[int, int, str]] = field(default_factory=list)
    run_dir: Path | None = None
    stopped_reason: str | None = None
    fed_evals: list[FedEvalMetrics] = field(default_factory=list)  # as the simulator's

    @property
    def wire_bytes(self) -> int:
        """Payload bytes moved, both directions, every round."""
        return sum(r.bytes_up + r.bytes_down for r in self.rounds)


@dataclass(frozen=True, eq=False)
class HeldUpload:
    """An accepted update waiting in the reorder buffer for its turn to be folded."""

    payload: Payload | MeanState | CompressedPartial
    weight: float
    metrics: dict[str, float]


@dataclass(eq=False)
class OpenRound:
    """The round in flight: its cohort, reorder buffer and running aggregate."""

    round_idx: int
    cohort: list[int]
    state: Any
    model: Broadcast
    run_id: str = ""
    streamed: bool = False
    size: int = 0  # entries of the model
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set when folding moves
    closed: bool = False
    in_flight: int | None = None  # the client whose upload is being folded
    void: str | None = None
    submitted: set[int] = field(default_factory=set)
    resolved: dict[int, HeldUpload | None] = field(default_factory=dict)
    next_fold: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    uploads: int = 0  # uploads received whole (accepted or not)
    decode_s: float = 0.0  # seconds spent decoding payloads into the sum
    folded_metrics: list[Mapping[str, float]] = field(default_factory=list)  # per folded client
    failed_at: list[float] = field(default_factory=list)  # when members failed (the clock's)
    accepted_at: list[float] = field(default_factory=list)  # when updates were accepted
    tier_clients: dict[int, tuple[int, ...]] = field(default_factory=dict)  # tiers' reports

    @property
    def members(self) -> frozenset[int]:
        return frozenset(self.cohort)


def dense_update_limit(size: int) -> int:
    """Largest update a center accepts for a model of ``size`` parameters.

    Covers a float64 partial aggregate of an aggregator tier (:func:`encode_partial`).
    """
    return 2 * dense_bytes(size) + (1 << 20)


def encode_partial(state: MeanState, clients: Sequence[int] | None = None) -> bytes:
    """A weighted-mean partial as bytes (``MeanState.to_arrays`` in an .npz archive);
    ``clients``: the tier's accepted clients, reported with it (None: not reported)."""
    arrays = state.to_arrays()
    if clients is not None:
        arrays[CLIENTS_KEY] = np.asarray(clients, dtype=np.int64)
    buf = io.BytesIO()  # a float32 (streamed) sum travels as float64, exactly
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_partial(data: bytes) -> MeanState:
    """The partial of :func:`encode_partial` (bit for bit).

    Raises:
        PayloadError: not an .npz archive, or a corrupted member.
        AggregationError: the arrays do not form a valid partial.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PayloadError(f"partial aggregate is not a valid .npz archive: {exc}") from None
    arrays.pop(CLIENTS_KEY, None)
    return MeanState.from_arrays(arrays)


def submission_problem(
    rnd: OpenRound | None, header: UploadHeader, run_id: str, *, mergeable: bool
) -> str | None:
    """Why a submission cannot count in the open round ``rnd`` of run ``run_id`` (None:
    it can): another run or round, a client not selected, a duplicate, or a partial
    aggregate for an aggregator that cannot merge partials (``mergeable``)."""
    cid = header.client_id
    if header.run_id != run_id:
        return f"submission for run {header.run_id or '(none)'}; this is run {run_id}"
    if rnd is None or rnd.round_idx != header.round_idx:
        open_idx = None if rnd is None else rnd.round_idx
        late = "late: " if open_idx is None or header.round_idx < open_idx else ""
        return f"{late}submission for round {header.round_idx}, open round is {open_idx}"
    if cid not in rnd.members:
        return f"client {cid} was not selected for round {rnd.round_idx}"
    if cid in rnd.submitted:
        return f"duplicate submission from client {cid} in round {rnd.round_idx}"
    if header.partial and not mergeable:
        return f"partial aggregate from {cid}, but this aggregator cannot merge partials"
    return None
