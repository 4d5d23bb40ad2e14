"""Build the runtime's center and clients from a :class:`~fedstrata.config.FedConfig`.

The same configuration drives the simulator (:func:`fedstrata.api.run`) and the
runtime, so a deterministic configuration trains the same model under both. The
runtime does not yet support compression, downlink compression, differential privacy
or secure aggregation; configurations that enable them are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedstrata.api import aggregator, build_dataset, local_plan, server_optimizer
from fedstrata.config import FedConfig
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core.clock import Clock
from fedstrata.core.context import derive_seed
from fedstrata.core.params import FloatVector
from fedstrata.core.training import Trainer, TrainerFactory
from fedstrata.data import FederatedDataset
from fedstrata.errors import ConfigError
from fedstrata.pipeline.dense import DenseCodec
from fedstrata.runtime.center import Center, CenterSettings, dense_update_limit
from fedstrata.runtime.client import CenterLink, ClientAgent
from fedstrata.runtime.transport import DEFAULT_CHUNK_BYTES, ChunkPlan

__all__ = ["Deployment", "check_supported", "deployment"]


def check_supported(config: FedConfig) -> None:
    """Refuse features the runtime does not carry yet.

    Raises:
        ConfigError: compression, downlink, privacy or secure aggregation is enabled.
    """
    for section in ("compression", "downlink", "privacy", "secagg"):
        if getattr(config, section).enabled:
            raise ConfigError(
                f"{section}.enabled=true is not supported by the runtime yet (simulator only)"
            )


@dataclass(frozen=True, eq=False)
class Deployment:
    """The parts a center or a client builds from one configuration."""

    config: FedConfig
    dataset: FederatedDataset
    factory: TrainerFactory
    trainer: Trainer

    def initial_params(self) -> FloatVector:
        """The initial model (same seed derivation as the simulator)."""
        seed = self.config.model.init_seed
        if seed is None:
            seed = derive_seed(self.config.seed, 0, -1, "init")
        return self.trainer.initial_params(seed)

    def center(
        self,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        min_available: int | None = None,
        clock: Clock | None = None,
    ) -> Center:
        """The center: all clients before round 0, then ``min_available`` (default: all)."""
        cfg, size = self.config, self.trainer.spec.size
        r = cfg.rounds
        settings = CenterSettings(
            rounds=r.rounds,
            plan=local_plan(cfg.client),
            root_seed=cfg.seed,
            min_available=min_available or self.dataset.num_clients,
            chunks=ChunkPlan(chunk_bytes, dense_update_limit(size)),
            round_timeout_s=r.deadline_s,
            start_clients=self.dataset.num_clients,
        )
        policy = RoundPolicy(r.clients_per_round, r.min_clients, r.deadline_s, cfg.seed)
        return Center(
            settings,
            coordinator=RoundCoordinator(policy),
            aggregator=aggregator(cfg.server),
            server_optimizer=server_optimizer(cfg.server),
            codec=DenseCodec(size),
            clock=clock,
        )

    def client(
        self, link: CenterLink, client_id: int, trainer: Trainer | None = None
    ) -> ClientAgent:
        """The agent of ``client_id`` over ``link`` (a fresh trainer unless given).

        Raises:
            ConfigError: ``client_id`` is not a client of the dataset.
        """
        if not 0 <= client_id < self.dataset.num_clients:
            raise ConfigError(
                f"client_id must be in [0, {self.dataset.num_clients}), got {client_id}"
            )
        data = self.dataset.client(client_id)
        return ClientAgent(link, client_id, trainer or self.factory(), data)


def deployment(config: FedConfig) -> Deployment:
    """Build the dataset and trainer factory of ``config`` (imports torch).

    Raises:
        ConfigError: an unsupported feature is enabled.
        DataError: the dataset cannot be built.
    """
    check_supported(config)
    from fedstrata.torch_adapter import TorchTrainerFactory  # deferred: imports torch

    dataset = build_dataset(config.data)
    factory = TorchTrainerFactory(
        model=config.model.kind,
        input_shape=dataset.input_shape,
        num_classes=dataset.num_classes,
        hidden=config.model.hidden,
        shuffle_seeding=config.client.shuffle,
    )
    return Deployment(config, dataset, factory, factory())
