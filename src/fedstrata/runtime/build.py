"""Build the runtime's center and clients from a :class:`~fedstrata.config.FedConfig`.

The same configuration drives the simulator (:func:`fedstrata.api.run`) and the
runtime, so a deterministic configuration trains the same model under both; both use
the shared builders of :mod:`fedstrata.builders` (the runtime imports neither the
simulator nor :mod:`fedstrata.api`).

With a task (``task:`` in the config, Issue 14 part 2) the center loads only its model
factory (the parameter layout and the initial weights) and no data; each client loads
its own data on its machine: ``task.local_data(DIR)`` for ``fedstrata client --data
DIR``, else ``task.client_data(client_id)``. Without a task, every process builds the
config's built-in dataset and a client trains on its partition. Uplink
compression travels as the client's codec encoded it (error-feedback residuals live
on the client). Differential privacy and secure aggregation (issue 13 parts 1-2) are
built by :mod:`fedstrata.builders_privacy`, as in the simulator: each client its own
ring codec, noise shares and protocol half; the center the protocol's server half
(:class:`~fedstrata.runtime.secagg_session.SecureRounds`) and the DP hooks
(:class:`~fedstrata.runtime.dp_center.DpCenter`). An explicit ``topology`` section
runs as the simulator's tree (:mod:`fedstrata.runtime.tier_periods`). What the runtime
does not run yet is refused by :func:`check_supported` (docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedstrata.aggregation import WeightedMean
from fedstrata.builders import (
    aggregator,
    build_dataset,
    init_seed,
    local_plan,
    resolve_task,
    server_optimizer,
    trainer_factory,
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
from fedstrata.config.compat import RUNTIME, refusal
from fedstrata.config.failover import runtime_refusal
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.coordinator.round_logic import Weighting
from fedstrata.core.clock import Clock
from fedstrata.core.context import derive_seed
from fedstrata.core.params import FloatVector
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import LocalData, Trainer, TrainerFactory
from fedstrata.errors import ConfigError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Codec, Pipeline
from fedstrata.runtime.aggregator import ParentLink, TierAggregator
from fedstrata.runtime.center import Center, CenterSettings, dense_update_limit
from fedstrata.runtime.client import Backoff, CenterLink, ClientAgent, Sleep
from fedstrata.runtime.downlink import DownlinkReplica, DownlinkServer
from fedstrata.runtime.dp_center import DpCenter
from fedstrata.runtime.dp_methods import plateau_loss
from fedstrata.runtime.fedeval_build import (
    FedEvalSetup,
    center_desk,
    split_deployment,
    tier_desk,
)
from fedstrata.runtime.sched_reports import DeviceReport
from fedstrata.runtime.secagg_client import SecureClient
from fedstrata.runtime.secagg_rounds import SecureRounds
from fedstrata.runtime.secagg_tier import EdgeSecure, edge_rounds, outer_rounds
from fedstrata.runtime.tier_combos import TierClients, check_tier_combos
from fedstrata.runtime.tier_periods import TreeSpec, center_rule, partial_grace_s, tree_refusal
from fedstrata.runtime.transport import DEFAULT_CHUNK_BYTES, ChunkPlan

if TYPE_CHECKING:
    from fedstrata.privacy import BudgetAllocator
    from fedstrata.runtime.aggregator import Reconnect
    from fedstrata.runtime.monitor import TierMonitor
    from fedstrata.runtime.scheduling import CenterScheduler
    from fedstrata.runtime.tier_sched import EdgeFollower
    from fedstrata.secagg import RingCodec, SecAggAggregator
    from fedstrata.torch_adapter import Task

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_START_TIMEOUT_S",
    "Deployment",
    "check_supported",
    "deployment",
]

DEFAULT_BACKOFF = Backoff()
DEFAULT_START_TIMEOUT_S = 60.0
DEFAULT_SECAGG_TIMEOUT_S = 60.0


def _check_tiers(cfg: FedConfig) -> None:
    """Refuse what aggregator tiers cannot run (a reason each).

    Raises:
        ConfigError: central DP on tiers without a topology section (its Poisson
            cohort is drawn over the federation, which such tiers do not do), or DP
            without secure aggregation on them.
    """
    p = cfg.privacy
    legacy = cfg.topology.mode == "flat"  # a topology's tiers report their clients
    if p.enabled and legacy and (p.mechanism == "central" or not cfg.secagg.enabled):
        raise ConfigError(
            f"privacy.mechanism={p.mechanism!r} with aggregator tiers and no topology "
            "section is not run by the deployment runtime: central DP samples a Poisson "
            "cohort over the federation, which such tiers do not draw; write the tree as "
            "a topology section (topology.mode: explicit), use privacy.mechanism="
            "distributed with secagg.enabled, or connect the clients to the center"
        )


def check_supported(config: FedConfig) -> None:
    """Refuse features the runtime does not carry (issue 12 part 3).

    The runtime's supported set is :data:`fedstrata.config.compat.RUNTIME`, checked by
    the same declaration as the simulator's (docs/compatibility.md); sections the
    runtime does not read (``scheduling``, ``topology``, ...) are refused, never ignored.

    Raises:
        ConfigError: a feature the runtime does not run is enabled; the message names
            its setting, its docs page and the reason.
    """
    why = refusal(config, RUNTIME) or runtime_refusal(config) or tree_refusal(config)
    if why is None and config.scheduling.async_.enabled:
        from fedstrata.runtime.fedbuff import buffered_refusal  # deferred: SQLAlchemy

        why = buffered_refusal(config)
    if why is None and config.scheduling.replay_url is not None:
        why = (
            "scheduling.replay_url (docs/scheduling.md) replays a deployment's recorded "
            "allocations in the simulator; a deployment allocates from its own timings "
            "(leave scheduling.replay_url unset for the runtime)"
        )
    if why is not None:
        raise ConfigError(why)


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
                refuse (``_check_tiers``, :func:`~.tier_combos.check_tier_combos`).
        """
        cfg, r = self.config, self.config.rounds
        if cfg.scheduling.async_.enabled:
            if participants is not None:
                raise ConfigError("FedBuff (scheduling.async) with aggregator tiers is not built")
            from fedstrata.runtime.fedbuff import buffered_center  # deferred: SQLAlchemy

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
            _check_tiers(cfg)
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
            self._over_tiers(center)
        return center

    def _over_tiers(self, center: Center) -> None:
        """Equip a center whose participants are aggregator tiers: ``min_clients`` over
        the tiers' clients; under a topology, the grace for the edges' partials past the
        deadline and, under ``scheduling``, the tree's scheduler (tier_sched.py)."""
        cfg, r = self.config, self.config.rounds
        center.tiers = TierClients(r.min_clients)
        if cfg.topology.mode == "flat":
            return
        hops = 2 if cfg.topology.regions else 1  # edges under regions send up later
        center.wait_grace_s = hops * partial_grace_s(r.deadline_s)
        if cfg.scheduling.enabled:
            from fedstrata.runtime.tier_sched import tree_scheduler  # deferred: SQLAlchemy

            flops = self.trainer.flops_per_example
            center.tree_sched = tree_scheduler(cfg, flops, self.size, self.num_clients)

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
        if clients < 1:
            raise ConfigError(f"an aggregator tier needs clients >= 1, got {clients}")
        cfg = self.config
        _check_tiers(cfg)
        check_tier_combos(cfg, self.num_clients)
        policy = RoundPolicy(None, 1, cfg.rounds.deadline_s, cfg.seed)
        settings = self._settings(chunk_bytes, 1, clients)
        scheduler: CenterScheduler | EdgeFollower | None = None
        if cfg.topology.mode == "flat":
            scheduler = self._scheduler()  # sizes its own clients' work
        elif cfg.scheduling.enabled:  # the center decides for the tree
            from fedstrata.runtime.tier_sched import EdgeFollower  # deferred: SQLAlchemy

            scheduler = EdgeFollower()
        secure = self._secure()
        center = Center(
            dataclasses.replace(settings, start_timeout_s=start_timeout_s),
            coordinator=RoundCoordinator(policy, selector=scheduler),
            aggregator=WeightedMean() if secure is None else secure[1],
            # unused: the parent applies
            server_optimizer=server_optimizer(cfg.server, cfg.project_dir),
            codec=self.uplink_codec(),
            downlink=self.downlink_server(),  # a relay of the parent's messages
            scheduler=scheduler,
        )
        if secure is not None:
            timeout = secagg_timeout_s or cfg.rounds.deadline_s or DEFAULT_SECAGG_TIMEOUT_S
            center.secure = edge_rounds(secure[1], timeout)
        center.evaluation = tier_desk(self, center)
        return center

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
        secure = center.secure
        tree = (
            None
            if self.config.topology.mode == "flat"
            else TreeSpec.of(self.config, self.num_clients)
        )
        if secure is None:
            agg = TierAggregator(
                parent, center, self.size, monitor, codec=self.partial_codec(),
                tier_id=tier_id, reconnect=reconnect, tree=tree, node=node,
            )  # fmt: skip
        else:
            edge = EdgeSecure.of(parent, secure.aggregator, secure)  # type: ignore[arg-type]
            agg = TierAggregator(
                parent, center, self.size, monitor,
                tier_id=tier_id, reconnect=reconnect, secure=edge, tree=tree, node=node,
            )  # fmt: skip
        region = tree is not None and node is not None and tree.is_region(node)
        if tree is not None and region:
            tree.serve_region(center)  # its children are edge tiers
        if tree is not None and self.config.scheduling.enabled:  # the center decides
            from fedstrata.runtime.tier_sched import follow  # deferred: SQLAlchemy

            agg.follower = follow(center, region=region)
        return agg

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
        from fedstrata.runtime.scheduling import center_scheduler  # deferred: SQLAlchemy

        flops = self.trainer.flops_per_example
        return center_scheduler(self.config, flops, self.size, self.num_clients)

    def _profile(self, trainer: Trainer, data: LocalData, client_id: int) -> DeviceReport | None:
        if not (self.config.scheduling.enabled or self.config.scheduling.registry_url):
            return None  # a profile for the scheduler, or FedBuff's registry
        from fedstrata.runtime.scheduling import client_profile  # deferred: SQLAlchemy

        return client_profile(self.config, trainer, data, client_id)

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
        :func:`~fedstrata.runtime.scheduling.client_profile`).

        Raises:
            ConfigError: ``client_id`` is not a client of the federation.
            TaskError: the task's data function failed or returned unusable data.
        """
        if not 0 <= client_id < self.num_clients:
            raise ConfigError(f"client_id must be in [0, {self.num_clients}), got {client_id}")
        data = self.local_data(client_id)
        trainer = trainer or self.factory()
        rng = np.random.default_rng(derive_seed(self.config.seed, 0, client_id, "reconnect"))
        residuals = MemoryStateStore()  # kept across center terms (client_terms.py)
        secure = self._secure(store=lambda: residuals)
        pipe = self._pipeline(None if secure is None else secure[0], lambda: residuals)
        weighting: Weighting = "uniform" if self.config.privacy.enabled else "examples"
        agent = ClientAgent(
            link,
            client_id,
            trainer,
            data,
            pipe,
            backoff=backoff,
            rng=rng,
            sleep=sleep,
            new_pipeline=functools.partial(self.client_pipeline, residuals),
            downlink=DownlinkReplica() if self.config.downlink.enabled else None,
            profile=profile or self._profile(trainer, data, client_id),
            secure=None if secure is None else SecureClient(link, secure[1], weighting),  # type: ignore[arg-type]
            residuals=residuals,
        )
        if self.fed_eval is not None:
            agent.eval_data = self.fed_eval.eval_data(client_id)
        return agent


def deployment(
    config: FedConfig, *, task: Task | str | None = None, data_dir: Path | None = None
) -> Deployment:
    """Build the trainer factory of ``config`` and where a client's data come from.

    Imports torch. Nothing reads data here: with a task, the center never does; a
    client reads its own in :meth:`Deployment.client`.

    Args:
        config: the configuration.
        task: your task object or import string (default: ``config.task``).
        data_dir: this client's data directory, read by ``task.local_data``.

    Raises:
        ConfigError: an unsupported feature, or ``data_dir`` without a task that has
            ``local_data``.
        TaskError: the task cannot be imported.
        DataError: the built-in dataset cannot be built.
    """
    check_supported(config)
    chosen = resolve_task(config, task)
    if chosen is None:
        if data_dir is not None:
            raise ConfigError("--data needs a task with local_data (see docs/tasks.md)")
        dataset = build_dataset(config.data)
        factory = trainer_factory(config, dataset)
        n = dataset.num_clients
        largest = int(dataset.client_sizes().max())
        dep = Deployment(
            config, n, factory, factory(), dataset.client, lambda: dataset.test, largest
        )
        return split_deployment(dep, dataset=dataset)
    factory = trainer_factory(config, None, chosen)
    source = _task_source(chosen, data_dir)
    test = _task_test(chosen)
    dep = Deployment(config, _task_clients(config, chosen), factory, factory(), source, test)
    return split_deployment(dep, task=chosen)


def _task_test(task: Task) -> Callable[[], LocalData] | None:
    """The task's central test set, loaded when first asked for (None without one)."""
    from fedstrata.torch_adapter.data import call_data_fn  # deferred: torch

    load = task.test_data
    if load is None:
        return None
    return lambda: call_data_fn(load)


def _task_clients(config: FedConfig, task: Task) -> int:
    """The federation's size: ``task.num_clients``, else ``data.num_clients``."""
    return task.num_clients if task.num_clients is not None else config.data.num_clients


def _task_source(task: Task, data_dir: Path | None) -> LocalSource:
    from fedstrata.torch_adapter.data import call_data_fn  # deferred: torch

    if data_dir is not None:
        read = task.local_data
        if read is None:
            raise ConfigError(
                f"--data {data_dir}: task {task.name!r} has no local_data(path) to read it"
            )
        return lambda _cid: call_data_fn(read, data_dir)  # type: ignore[arg-type]
    load = task.client_data
    if load is None:
        return _NoData(task.name)  # the center needs none; a client fails at start-up
    return lambda cid: call_data_fn(load, cid)


@dataclass(frozen=True)
class _NoData:
    task_name: str

    def __call__(self, client_id: int) -> LocalData:
        raise ConfigError(
            f"task {self.task_name!r} has no client_data(client_id): give client {client_id} "
            "its data directory with --data DIR (read by the task's local_data)"
        )
