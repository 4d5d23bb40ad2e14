"""Build the runtime's center, tiers and clients from a :class:`~fedstrata.config.FedConfig`.

:class:`Deployment` holds what one configuration builds (its trainer factory and where
a client's data come from; loaded by :func:`~fedstrata.runtime.loader.deployment`) and
builds from it the center (:meth:`Deployment.center`), an aggregator tier's two halves
(:meth:`Deployment.edge`, :meth:`Deployment.tier`) and a client's agent
(:meth:`Deployment.client`, assembled in :mod:`~fedstrata.runtime.build_client`).

The same configuration drives the simulator (:func:`fedstrata.api.run`) and the
runtime, so a deterministic configuration trains the same model under both; both use
the shared builders of :mod:`fedstrata.builders` (the runtime imports neither the
simulator nor :mod:`fedstrata.api`). Uplink compression travels as the client's codec
encoded it (error-feedback residuals live on the client). Differential privacy and
secure aggregation (issue 13 parts 1-2) are built by :mod:`fedstrata.builders_privacy`,
as in the simulator: each client its own ring codec, noise shares and protocol half;
the center the protocol's server half
(:class:`~fedstrata.runtime.secagg_session.SecureRounds`) and the DP hooks
(:class:`~fedstrata.runtime.dp_center.DpCenter`). An explicit ``topology`` section
runs as the simulator's tree (:mod:`fedstrata.runtime.tier_periods`). What the runtime
does not run yet is refused by :func:`~fedstrata.runtime.support.check_supported`
(docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedstrata.builders import (
    aggregator,
    init_seed,
    local_plan,
    server_optimizer,
)
from fedstrata.builders_dp import cohort_selector
from fedstrata.builders_privacy import (
    StoreFactory,
    distributed_allocator,
    poisson_rate,
    privacy_hooks,
    secure_aggregation,
    uplink_pipeline,
)
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.config import FedConfig
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core.clock import Clock
from fedstrata.core.params import FloatVector
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import LocalData, Trainer, TrainerFactory
from fedstrata.errors import ConfigError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Codec, Pipeline
from fedstrata.runtime.aggregator import TierAggregator
from fedstrata.runtime.build_client import client_agent
from fedstrata.runtime.build_tiers import edge_center, over_tiers, tier_aggregator
from fedstrata.runtime.center import Center, CenterSettings, dense_update_limit
from fedstrata.runtime.client import ClientAgent
from fedstrata.runtime.client_link import Backoff, CenterLink, Sleep
from fedstrata.runtime.downlink import DownlinkServer
from fedstrata.runtime.dp_center import DpCenter
from fedstrata.runtime.dp_methods import plateau_loss
from fedstrata.runtime.fedeval_build import (
    FedEvalSetup,
    center_desk,
)
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.secagg_rounds import SecureRounds
from fedstrata.runtime.secagg_tier import outer_rounds
from fedstrata.runtime.support import check_tiers
from fedstrata.runtime.tier_combos import check_tier_combos
from fedstrata.runtime.tier_periods import TreeSpec, center_rule
from fedstrata.runtime.transport import DEFAULT_CHUNK_BYTES, ChunkPlan

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.runtime.monitor import TierMonitor
    from fedstrata.runtime.parent_link import ParentLink, Reconnect
    from fedstrata.runtime.scheduling import CenterScheduler
    from fedstrata.secagg import RingCodec, SecAggAggregator

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_START_TIMEOUT_S",
    "Deployment",
]

DEFAULT_BACKOFF = Backoff()
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_SECAGG_TIMEOUT_S = 60.0


LocalSource = Callable[[int], LocalData]
"""Loads one client's data on this machine (called by that client only)."""


@dataclass(frozen=True, eq=False)
class Deployment:
    """The parts a center or a client builds from one configuration.

    Attributes:
        config: the configuration.
        num_clients: clients of the federation (the center waits for them all).
        factory: builds a trainer (the model layout; no data).
        trainer: one trainer built by ``factory``.
        local_data: loads a client's own data, on the client's machine only.
        test_data: loads the center's test set (the built-in data's, or a task's
            ``test_data()``), or None without one; called by the center only.
        largest_client: examples of the largest client, where every party knows it
            (the built-in data); sizes secure aggregation's weights and ring.
    """

    config: FedConfig
    num_clients: int
    factory: TrainerFactory
    trainer: Trainer
    local_data: LocalSource
    test_data: Callable[[], LocalData] | None = None
    largest_client: int | None = None
    fed_eval: FedEvalSetup | None = None  # federated evaluation's data (fedeval_build.py)

    def initial_params(self) -> FloatVector:
        """The initial model (same seed derivation as the simulator)."""
        return self.trainer.initial_params(init_seed(self.config))

    @property
    def size(self) -> int:
        """Parameters of the model."""
        return self.trainer.spec.size

    def center(
        self,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        min_available: int | None = None,
        clock: Clock | None = None,
        participants: int | None = None,
        stream_min_bytes: int | None = 64 << 20,
        start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
        secagg_timeout_s: float | None = None,
    ) -> Center:
        """The center: round 0 waits for every participant at most ``start_timeout_s``;
        every round starts once ``min_available`` clients are reachable.

        Args:
            chunk_bytes: transfer chunk size.
            min_available: the quorum of reachable clients (default:
                ``rounds.min_clients``).
            clock: time source of the coordinator.
            participants: aggregator tiers below the center (None: the clients connect
                directly). With tiers, every live tier takes part in every round and
                the aggregator must be ``mean``.
            stream_min_bytes: model size from which rounds aggregate streaming
                (``CenterSettings.stream_min_bytes``).
            start_timeout_s: how long round 0 waits for every participant.
            secagg_timeout_s: how long a secure-aggregation step waits for the cohort
                (default: ``rounds.deadline_s``, else 60 s).

        Raises:
            ConfigError: tiers under a non-mergeable aggregator, or with what tiers
                refuse (:func:`~.support.check_tiers`, :func:`~.tier_combos.check_tier_combos`).
        """
        cfg, r = self.config, self.config.rounds
        if cfg.scheduling.async_.enabled:
            if participants is not None:
                raise ConfigError("FedBuff (scheduling.async) with aggregator tiers is not built")
            from fedstrata.runtime.fedbuff_build import buffered_center  # deferred: SQLAlchemy

            buffered = buffered_center(
                cfg, self._settings(chunk_bytes, min_available or r.min_clients, self.num_clients),
                num_clients=self.num_clients, size=self.size, codec=self.uplink_codec(),
                clock=clock, start_timeout_s=start_timeout_s,
            )  # fmt: skip
            buffered.evaluation = center_desk(self, buffered, buffered.server_updates)
            return buffered
        if participants is None:
            start = self.num_clients
            poisson = poisson_rate(cfg, self.num_clients)
            policy = RoundPolicy(
                r.clients_per_round, r.min_clients, r.deadline_s, cfg.seed, poisson_rate=poisson
            )
        else:
            start = participants  # a tree's edges close at the deadline, then send up
            deadline = r.deadline_s if cfg.topology.mode == "flat" else None
            policy = RoundPolicy(None, 1, deadline, cfg.seed)
        if participants is not None:
            check_tiers(cfg)
        if cfg.topology.mode != "flat":
            TreeSpec.of(cfg, self.num_clients).check_center(participants)
        allocator = distributed_allocator(cfg, self.num_clients)
        secure = self._secure(allocator)
        agg = aggregator(cfg.server, cfg.project_dir) if secure is None else secure[1]
        if participants is not None and secure is None and cfg.topology.mode != "flat":
            agg = center_rule(cfg, agg)  # a robust or custom rule over the edges' means
        if participants is not None and secure is None and not agg.mergeable:
            raise ConfigError(f"server.aggregator={cfg.server.aggregator!r} cannot merge tiers")
        if participants is not None:
            check_tier_combos(cfg, self.num_clients)
        pipe = self._pipeline(None if secure is None else secure[0])
        settings = self._settings(chunk_bytes, min_available or r.min_clients, start)
        settings = dataclasses.replace(
            settings, stream_min_bytes=stream_min_bytes, start_timeout_s=start_timeout_s
        )
        scheduler = self._scheduler() if participants is None else None
        center = Center(
            settings,
            coordinator=RoundCoordinator(
                policy, selector=cohort_selector(cfg, self.num_clients, scheduler)
            ),
            aggregator=agg,
            server_optimizer=server_optimizer(cfg.server, cfg.project_dir),
            codec=self.uplink_codec() if pipe is None else pipe.codec,
            pipeline=pipe if cfg.privacy.enabled else None,
            clock=clock,
            downlink=self.downlink_server(),
            scheduler=scheduler,
        )
        if secure is not None:
            timeout = secagg_timeout_s or r.deadline_s or DEFAULT_SECAGG_TIMEOUT_S
            rounds = SecureRounds if participants is None else outer_rounds
            center.secure = rounds(secure[1], timeout)
        if cfg.privacy.enabled:
            hooks = privacy_hooks(cfg, pipe, self.num_clients, self.size, allocator)
            progress = plateau_loss(cfg, self.trainer, self.test_data)  # switch_on_plateau
            center.dp = DpCenter(hooks, progress=progress)
        center.evaluation = center_desk(self, center)
        if participants is not None:
            over_tiers(self, center)
        return center

    def _secure(
        self, allocator: BudgetAllocator | None = None, store: StoreFactory = MemoryStateStore
    ) -> tuple[RingCodec, SecAggAggregator] | None:
        """The ring codec and secure aggregator of the config (None: ``secagg`` off);
        each party builds its own (clients keep error-feedback residuals in memory)."""
        if allocator is None:
            allocator = distributed_allocator(self.config, self.num_clients)
        return secure_aggregation(
            self.config, self.size, self.num_clients, self.largest_client,
            allocator=allocator, store=store,
        )  # fmt: skip

    def _pipeline(
        self, ring: Codec | None, store: StoreFactory = MemoryStateStore
    ) -> Pipeline | None:
        return uplink_pipeline(self.config, self.size, store, ring)

    def edge(
        self,
        clients: int,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
        secagg_timeout_s: float | None = None,
    ) -> Center:
        """The client-facing center of an aggregator tier serving ``clients`` clients.

        Every connected client trains in every round the parent runs (weighted by its
        examples; under ``scheduling`` its work sized to the deadline by the tier's own
        scheduler, which writes to the same registry); under a ``topology`` section the
        tier (:meth:`tier`) picks each round's members and runs its periods. The first
        round waits for all ``clients`` at most ``start_timeout_s``, then runs with
        those connected.

        Raises:
            ConfigError: ``clients`` < 1.
        """
        timeout_s = secagg_timeout_s or self.config.rounds.deadline_s or DEFAULT_SECAGG_TIMEOUT_S
        return edge_center(
            self, clients, chunk_bytes=chunk_bytes, start_timeout_s=start_timeout_s,
            secagg_timeout_s=timeout_s,
        )  # fmt: skip

    def tier(
        self,
        parent: ParentLink,
        center: Center,
        monitor: TierMonitor | None = None,
        *,
        tier_id: int = -1,
        reconnect: Reconnect | None = None,
        node: str | None = None,
    ) -> TierAggregator:
        """The aggregator tier serving ``center`` (from :meth:`edge`) under ``parent``;
        with secure aggregation it runs the edge's half of the two tiers (its masked
        cluster sum goes up as is), else it re-compresses its partial with
        :meth:`partial_codec`. Under ``topology.edges`` it is the edge ``node`` of that
        tree (None: the edge its clients belong to) and runs its periods."""
        return tier_aggregator(
            self, parent, center, monitor, tier_id=tier_id, reconnect=reconnect, node=node
        )

    def partial_codec(self, spec: CompressionSpec | None = None) -> ChainCodec | None:
        """The codec a tier re-compresses its partial with (its own error feedback):
        ``spec``, else ``topology.partial_compression`` (None: exact partials)."""
        t = self.config.topology.partial_compression
        spec = spec or (t.spec() if t.enabled else None)
        if spec is None:
            return None
        store = MemoryStateStore() if spec.error_feedback else None
        return ChainCodec(spec, self.size, store, state_key="partial_ef")

    def _scheduler(self) -> CenterScheduler | None:
        if not self.config.scheduling.enabled:
            return None
        from fedstrata.runtime.sched_build import center_scheduler  # deferred: SQLAlchemy

        flops = self.trainer.flops_per_example
        return center_scheduler(self.config, flops, self.size, self.num_clients)

    def downlink_server(self) -> DownlinkServer | None:
        """The center's half of downlink compression (None: off)."""
        d = self.config.downlink
        return DownlinkServer(d.spec(), d.history) if d.enabled else None

    def _settings(self, chunk_bytes: int, min_available: int, start: int) -> CenterSettings:
        cfg = self.config
        return CenterSettings(
            rounds=cfg.rounds.rounds,
            plan=local_plan(cfg.client),
            root_seed=cfg.seed,
            min_available=min_available,
            chunks=ChunkPlan(chunk_bytes, dense_update_limit(self.size)),
            round_timeout_s=cfg.rounds.deadline_s,
            start_clients=start,
            weighting="uniform" if cfg.privacy.enabled else "examples",
        )

    def uplink_codec(self) -> Codec:
        """The codec that decodes client updates (no error-feedback state: decode only)."""
        c = self.config.compression
        if not c.enabled:
            return DenseCodec(self.size)
        store = MemoryStateStore() if c.spec().error_feedback else None
        return ChainCodec(c.spec(), self.size, store)

    def client_pipeline(self, residuals: MemoryStateStore | None = None) -> Pipeline | None:
        """A client's uplink pipeline (privacy stages, the ring or the compression chain;
        its own error-feedback residual, in ``residuals`` when given), or None: dense."""
        store: StoreFactory = MemoryStateStore if residuals is None else (lambda: residuals)
        secure = self._secure(store=store)
        return self._pipeline(None if secure is None else secure[0], store)

    def client(
        self,
        link: CenterLink,
        client_id: int,
        trainer: Trainer | None = None,
        *,
        backoff: Backoff | None = DEFAULT_BACKOFF,
        sleep: Sleep = asyncio.sleep,
        profile: DeviceReport | None = None,
    ) -> ClientAgent:
        """The agent of ``client_id`` over ``link`` (a fresh trainer unless given).

        It loads its own data here (:attr:`local_data`). It reconnects per
        ``backoff`` (jitter seeded by the run seed and ``client_id``); ``sleep``
        awaits the delays (tests inject a fake). Under ``scheduling`` it reports
        ``profile`` to the center (default: this device measured at start-up,
        :func:`~fedstrata.runtime.sched_build.client_profile`).

        Raises:
            ConfigError: ``client_id`` is not a client of the federation.
            TaskError: the task's data function failed or returned unusable data.
        """
        return client_agent(
            self, link, client_id, trainer, backoff=backoff, sleep=sleep, profile=profile
        )
