"""Pydantic configuration models: one typed tree, validated once at load time.

Every model forbids unknown keys, so a typo (``client.lrr``) is an error that names
the field instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedstrata.compress import CompressionSpec, resolve_spec
from fedstrata.errors import ConfigError

__all__ = [
    "ClientConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "DownlinkConfig",
    "FedConfig",
    "ModelConfig",
    "OutputConfig",
    "PrivacyConfig",
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
    synthetic_max_samples: int | None = Field(
        None,
        ge=2,
        description="cap on a synthetic client's examples (the size law is heavy-tailed)",
    )
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


class CompressionConfig(_Strict):
    """A compression chain: a ``preset`` (see ``docs/compression.md``) and overrides.

    Fields left unset come from the preset (default ``none``: dense float32).
    """

    preset: str = "none"
    sparsify: Literal["none", "topk", "topk_approx", "randk"] | None = None
    density: float | None = Field(None, gt=0, le=1)
    quantize: Literal[32, 8, 4, 2, 1] | None = None
    stochastic: bool | None = None
    block_size: int | None = Field(None, ge=1)
    error_feedback: bool | None = None
    zstd: bool | None = None
    zstd_level: int | None = Field(None, ge=1, le=22)

    @model_validator(mode="after")
    def _resolves(self) -> CompressionConfig:
        try:
            self.spec()
        except ConfigError as exc:  # reported with the section's name by pydantic
            raise ValueError(str(exc)) from None
        return self

    def spec(self) -> CompressionSpec:
        """The validated compression spec."""
        return resolve_spec(self.model_dump(exclude_none=True))

    @property
    def enabled(self) -> bool:
        return self.spec() != CompressionSpec()


class DownlinkConfig(CompressionConfig):
    """Compression of the model broadcast (deltas since the version a client holds)."""

    history: int = Field(8, ge=1, description="deltas kept; older clients get the full model")

    def spec(self) -> CompressionSpec:
        return resolve_spec(self.model_dump(exclude_none=True, exclude={"history"}))


class PrivacyConfig(_Strict):
    """User-level differential privacy (see ``docs/privacy.md``).

    ``mechanism: central`` clips every update to ``clip_norm``, weights clients
    uniformly, samples the cohort by Poisson sampling at rate
    ``clients_per_round / num_clients``, adds Gaussian noise at the server, and stops
    training when the (epsilon, delta) budget would be exceeded. ``schedule: staged``
    splits the budget over stages of the planned rounds (``stage_fractions``) by
    ``stage_weights``; ``uniform`` is one stage.
    """

    mechanism: Literal["none", "central"] = "none"
    epsilon: float = Field(2.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    clip_norm: float = Field(1.0, gt=0)
    schedule: Literal["uniform", "staged"] = "staged"
    stage_weights: tuple[float, ...] = (0.3, 0.5, 0.2)
    stage_fractions: tuple[float, ...] | None = Field(
        None, description="share of the planned rounds per stage; default: equal"
    )
    planned_rounds: int | None = Field(None, ge=1, description="default: rounds.rounds")
    accountant: Literal["pld", "rdp"] = "pld"
    switch_on_plateau: bool = False
    plateau_window: int = Field(5, ge=1)
    plateau_tol: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _stages_line_up(self) -> PrivacyConfig:
        fractions = self.stage_fractions
        if fractions is not None and len(fractions) != len(self.stage_weights):
            raise ValueError(
                f"privacy.stage_fractions has {len(fractions)} entries but "
                f"stage_weights has {len(self.stage_weights)}"
            )
        if any(not 0 < w <= 1 for w in (*self.stage_weights, *(fractions or ()))):
            raise ValueError("privacy stage weights and fractions must be in (0, 1]")
        return self

    @property
    def enabled(self) -> bool:
        return self.mechanism != "none"


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
    compression: CompressionConfig = CompressionConfig()
    downlink: DownlinkConfig = DownlinkConfig()
    privacy: PrivacyConfig = PrivacyConfig()
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
