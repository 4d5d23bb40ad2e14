"""Pydantic configuration models: one typed tree, validated once at load time.

Every model forbids unknown keys, so a typo (``client.lrr``) is an error that names
the field instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ClientConfig",
    "DataConfig",
    "DevicesConfig",
    "FedConfig",
    "ModelConfig",
    "OutputConfig",
    "RoundsConfig",
    "ServerConfig",
    "SimConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where client data comes from and how it is split across clients."""

    name: Literal["digits", "synthetic", "npz"] = "digits"
    path: Path | None = Field(None, description="folder of client_*.npz files (name: npz)")
    partition: Literal["iid", "dirichlet", "shards", "quantity"] = "dirichlet"
    num_clients: int = Field(100, ge=1, le=1_000_000)
    shards_per_client: int = Field(2, ge=1)
    dirichlet_alpha: float = Field(0.5, gt=0)
    quantity_sigma: float = Field(1.0, gt=0)
    synthetic_alpha: float = Field(1.0, ge=0)
    synthetic_beta: float = Field(1.0, ge=0)
    seed: int = Field(0, ge=0, description="seed of the partition (independent of the run seed)")

    @model_validator(mode="after")
    def _npz_needs_path(self) -> DataConfig:
        if self.name == "npz" and self.path is None:
            raise ValueError("data.path is required when data.name is 'npz'")
        return self


class ModelConfig(_Strict):
    kind: Literal["logreg", "mlp", "cnn"] = "mlp"
    hidden: int = Field(128, ge=1)
    init_seed: int | None = Field(
        None, ge=0, description="seed of the initial weights; None derives it from the run seed"
    )


class ClientConfig(_Strict):
    """Local training on each client (FedAvg; FedProx when prox_mu > 0)."""

    epochs: int | None = Field(1, ge=1)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    prox_mu: float = Field(0.0, ge=0)
    shuffle: Literal["derived", "round_client"] = Field(
        "derived",
        description="derived: per-(round, client) seeds from the run seed; "
        "round_client: 100003 * round + client_id (workload W1's reference loop)",
    )

    @model_validator(mode="after")
    def _epochs_xor_steps(self) -> ClientConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("set exactly one of client.epochs and client.steps")
        return self


class ServerConfig(_Strict):
    """Server optimizer (Reddi et al. 2021) and aggregator."""

    optimizer: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = "fedavg"
    lr: float = Field(1.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    aggregator: Literal["mean", "median", "trimmed_mean", "krum"] = "mean"
    trim_fraction: float = Field(0.1, ge=0, lt=0.5)
    krum_byzantine: int = Field(1, ge=0)


class RoundsConfig(_Strict):
    rounds: int = Field(30, ge=1)
    clients_per_round: int | None = Field(None, ge=1, description="None: every client")
    min_clients: int = Field(1, ge=1)
    deadline_s: float | None = Field(None, gt=0, description="simulated seconds per round")
    eval_every: int = Field(1, ge=1)


class DevicesConfig(_Strict):
    """Generated device profiles (or a file of them) for simulated time."""

    profiles_path: Path | None = None
    flops_max: float = Field(2e10, gt=0, description="fastest device, FLOP/s")
    compute_spread: float = Field(1000.0, ge=1, description="fastest / slowest compute")
    uplink_mbps: float = Field(20.0, gt=0, description="median uplink")
    downlink_mbps: float = Field(100.0, gt=0, description="median downlink")
    bandwidth_sigma: float = Field(0.5, ge=0, description="log-normal spread of bandwidth")
    latency_ms: float = Field(40.0, ge=0, description="median one-way latency")
    availability: float = Field(1.0, gt=0, le=1)
    memory_gb: float = Field(4.0, gt=0)


class SimConfig(_Strict):
    workers: int | Literal["auto"] = "auto"
    start_method: Literal["fork", "inprocess"] = "fork"


class OutputConfig(_Strict):
    dir: Path = Path("runs")
    run_store: bool = True
    report: bool = True
    progress: bool = True


class FedConfig(_Strict):
    """A whole federation: data, model, client and server algorithms, rounds, devices."""

    name: str = "federation"
    seed: int = Field(0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    rounds: RoundsConfig = RoundsConfig()
    devices: DevicesConfig = DevicesConfig()
    sim: SimConfig = SimConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _cohort_fits(self) -> FedConfig:
        cpr = self.rounds.clients_per_round
        if cpr is not None and self.data.name != "npz" and cpr > self.data.num_clients:
            raise ValueError(
                f"rounds.clients_per_round ({cpr}) exceeds data.num_clients "
                f"({self.data.num_clients})"
            )
        return self
