"""Build the runtime's center and clients from a :class:`~fedstrata.config.FedConfig`.

The same configuration drives the simulator (:func:`fedstrata.api.run`) and the
runtime, so a deterministic configuration trains the same model under both. Uplink
compression travels as the client's codec encoded it (error-feedback residuals live
on the client); downlink compression, differential privacy and secure aggregation are
not supported yet and are refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import numpy as np

from fedstrata.aggregation import WeightedMean
from fedstrata.api.components import (
    aggregator,
    build_dataset,
    init_seed,
    local_plan,
    server_optimizer,
    trainer_factory,
)
from fedstrata.compress import ChainCodec
from fedstrata.config import FedConfig
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core.clock import Clock
from fedstrata.core.context import derive_seed
from fedstrata.core.params import FloatVector
from fedstrata.core.state import MemoryStateStore
from fedstrata.core.training import Trainer, TrainerFactory
from fedstrata.data import FederatedDataset
from fedstrata.errors import ConfigError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Codec, Pipeline
from fedstrata.runtime.center import Center, CenterSettings, dense_update_limit
from fedstrata.runtime.client import Backoff, CenterLink, ClientAgent, Sleep
from fedstrata.runtime.transport import DEFAULT_CHUNK_BYTES, ChunkPlan

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_START_TIMEOUT_S",
    "Deployment",
    "check_supported",
    "deployment",
]

DEFAULT_BACKOFF = Backoff()
DEFAULT_START_TIMEOUT_S = 60.0


def check_supported(config: FedConfig) -> None:
    """Refuse features the runtime does not carry yet.

    Raises:
        ConfigError: downlink compression, privacy or secure aggregation is enabled.
    """
    refused = {
        "downlink compression (downlink.preset=none turns it off)": config.downlink.enabled,
        f"privacy.mechanism={config.privacy.mechanism}": config.privacy.enabled,
        "secagg.enabled=true": config.secagg.enabled,
    }
    for what, on in refused.items():
        if on:
            raise ConfigError(f"{what} is not supported by the runtime yet (simulator only)")


@dataclass(frozen=True, eq=False)
class Deployment:
    """The parts a center or a client builds from one configuration."""

    config: FedConfig
    dataset: FederatedDataset
    factory: TrainerFactory
    trainer: Trainer

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

        Raises:
            ConfigError: tiers under a non-mergeable aggregator.
        """
        cfg, r = self.config, self.config.rounds
        if participants is None:
            start = self.dataset.num_clients
            policy = RoundPolicy(r.clients_per_round, r.min_clients, r.deadline_s, cfg.seed)
        else:
            start = participants
            policy = RoundPolicy(None, 1, r.deadline_s, cfg.seed)
        agg = aggregator(cfg.server)
        if participants is not None and not agg.mergeable:
            raise ConfigError(f"server.aggregator={cfg.server.aggregator!r} cannot merge tiers")
        settings = self._settings(chunk_bytes, min_available or r.min_clients, start)
        settings = dataclasses.replace(
            settings, stream_min_bytes=stream_min_bytes, start_timeout_s=start_timeout_s
        )
        return Center(
            settings,
            coordinator=RoundCoordinator(policy),
            aggregator=agg,
            server_optimizer=server_optimizer(cfg.server),
            codec=self.uplink_codec(),
            clock=clock,
        )

    def edge(
        self,
        clients: int,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
    ) -> Center:
        """The client-facing center of an aggregator tier serving ``clients`` clients.

        Every connected client trains in every round the parent runs (weighted by its
        examples); the first round waits for all ``clients`` at most
        ``start_timeout_s``, then runs with those connected.

        Raises:
            ConfigError: ``clients`` < 1.
        """
        if clients < 1:
            raise ConfigError(f"an aggregator tier needs clients >= 1, got {clients}")
        cfg = self.config
        policy = RoundPolicy(None, 1, cfg.rounds.deadline_s, cfg.seed)
        settings = self._settings(chunk_bytes, 1, clients)
        return Center(
            dataclasses.replace(settings, start_timeout_s=start_timeout_s),
            coordinator=RoundCoordinator(policy),
            aggregator=WeightedMean(),
            server_optimizer=server_optimizer(cfg.server),  # unused: the parent applies
            codec=self.uplink_codec(),
        )

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
        )

    def uplink_codec(self) -> Codec:
        """The codec that decodes client updates (no error-feedback state: decode only)."""
        c = self.config.compression
        if not c.enabled:
            return DenseCodec(self.size)
        store = MemoryStateStore() if c.spec().error_feedback else None
        return ChainCodec(c.spec(), self.size, store)

    def client_pipeline(self) -> Pipeline | None:
        """A client's uplink pipeline (its own error-feedback residual), or None: dense."""
        c = self.config.compression
        if not c.enabled:
            return None
        store = MemoryStateStore() if c.spec().error_feedback else None
        return Pipeline([], ChainCodec(c.spec(), self.size, store))

    def client(
        self,
        link: CenterLink,
        client_id: int,
        trainer: Trainer | None = None,
        *,
        backoff: Backoff | None = DEFAULT_BACKOFF,
        sleep: Sleep = asyncio.sleep,
    ) -> ClientAgent:
        """The agent of ``client_id`` over ``link`` (a fresh trainer unless given).

        It reconnects per ``backoff`` (jitter seeded by the run seed and ``client_id``);
        ``sleep`` awaits the delays (tests inject a fake).

        Raises:
            ConfigError: ``client_id`` is not a client of the dataset.
        """
        if not 0 <= client_id < self.dataset.num_clients:
            raise ConfigError(
                f"client_id must be in [0, {self.dataset.num_clients}), got {client_id}"
            )
        data = self.dataset.client(client_id)
        trainer = trainer or self.factory()
        rng = np.random.default_rng(derive_seed(self.config.seed, 0, client_id, "reconnect"))
        return ClientAgent(
            link,
            client_id,
            trainer,
            data,
            self.client_pipeline(),
            backoff=backoff,
            rng=rng,
            sleep=sleep,
            new_pipeline=self.client_pipeline,
        )


def deployment(config: FedConfig) -> Deployment:
    """Build the dataset and trainer factory of ``config`` (imports torch).

    Raises:
        ConfigError: an unsupported feature is enabled.
        DataError: the dataset cannot be built.
    """
    check_supported(config)
    dataset = build_dataset(config.data)
    factory = trainer_factory(config, dataset)
    return Deployment(config, dataset, factory, factory())
