"""Pydantic configuration models: one typed tree, validated once at load time.

Every model forbids unknown keys, so a typo (``client.lrr``) is an error that names
the field instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fedstrata.config.base import Strict as _Strict
from fedstrata.config.checkpoint import CheckpointConfig
from fedstrata.config.compat import refusal
from fedstrata.config.failover import FailoverConfig
from fedstrata.config.features import (
    CompressionConfig,
    DownlinkConfig,
    FedBuffSection,
    PrivacyConfig,
    SchedulingConfig,
    SecAggSettings,
    TopologyConfig,
    secagg_compression_fits,
    secagg_privacy_fits,
)
from fedstrata.monitoring.settings import MonitoringConfig

__all__ = [
    "CheckpointConfig",
    "ClientConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "DownlinkConfig",
    "EvaluationConfig",
    "FailoverConfig",
    "FedBuffSection",
    "FedConfig",
    "ModelConfig",
    "MonitoringConfig",
    "OutputConfig",
    "PrivacyConfig",
    "RoundsConfig",
    "SchedulingConfig",
    "SecAggSettings",
    "ServerConfig",
    "SimConfig",
    "TopologyConfig",
]


class DataConfig(_Strict):
    """Where client data comes from and how it is split across clients."""

    name: Literal["digits", "synthetic", "npz"] = Field(
        "digits",
        description="digits (scikit-learn), synthetic (FedProx), npz (your own files)",
    )
    path: Path | None = Field(None, description="folder of client_*.npz files (name: npz)")
    partition: Literal["iid", "dirichlet", "shards", "quantity"] = Field(
        "dirichlet", description="how examples are split across clients (digits)"
    )
    num_clients: int = Field(
        100, ge=1, le=1_000_000, description="number of clients (digits, synthetic)"
    )
    shards_per_client: int = Field(
        2, ge=1, description="label shards per client (partition: shards)"
    )
    dirichlet_alpha: float = Field(
        0.5,
        gt=0,
        description="Dirichlet concentration, smaller is more skewed (partition: dirichlet)",
    )
    quantity_sigma: float = Field(
        1.0, gt=0, description="log-normal spread of client sizes (partition: quantity)"
    )
    synthetic_alpha: float = Field(
        1.0, ge=0, description="Synthetic alpha: how much client models differ"
    )
    synthetic_beta: float = Field(
        1.0, ge=0, description="Synthetic beta: how much client feature distributions differ"
    )
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
    """The model every client trains (a built-in task; PyTorch)."""

    kind: Literal["logreg", "mlp", "cnn"] = Field(
        "mlp", description="logistic regression, 2-layer MLP, or a small CNN"
    )
    hidden: int = Field(128, ge=1, description="hidden width (mlp, cnn)")
    init_seed: int | None = Field(
        None, ge=0, description="seed of the initial weights; None derives it from the run seed"
    )


class ClientConfig(_Strict):
    """Local training on each client (FedAvg; FedProx when prox_mu > 0)."""

    epochs: int | None = Field(1, ge=1, description="local epochs per round (or set steps)")
    steps: int | None = Field(
        None, ge=1, description="local minibatch steps per round (or set epochs)"
    )
    batch_size: int = Field(8, ge=1, description="local minibatch size")
    lr: float = Field(0.05, gt=0, description="local learning rate")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local optimizer")
    momentum: float = Field(0.0, ge=0, lt=1, description="local SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="local weight decay")
    prox_mu: float = Field(0.0, ge=0, description="FedProx proximal term mu (0: FedAvg)")
    shuffle: Literal["derived", "round_client"] = Field(
        "derived",
        description="derived: per-(round, client) seeds from the run seed; "
        "round_client: 100003 * round + client_id (workload W1's reference loop)",
    )
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32",
        description="local training's forward pass: fp32; bf16 or fp16 autocast with "
        "float32 weights, optimizer state and updates (fp16: dynamic loss scaling); "
        "auto: bf16 where the training machine has native bfloat16, else fp32 "
        "(docs/precision.md)",
    )

    @model_validator(mode="after")
    def _epochs_xor_steps(self) -> ClientConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("set exactly one of client.epochs and client.steps")
        return self


class ServerConfig(_Strict):
    """Server optimizer (Reddi et al. 2021) and aggregator."""

    optimizer: str = Field(
        "fedavg",
        description="server optimizer (Reddi et al. 2021): fedavg, fedavgm, fedadam, "
        "fedyogi, fedadagrad, or your own as an import string (my_project.strategy:MyOpt, "
        "see docs/tasks.md)",
    )
    lr: float = Field(1.0, gt=0, description="server learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM server momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="adaptive optimizers' first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="adaptive optimizers' second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptive optimizers adaptivity tau")
    aggregator: str = Field(
        "mean",
        description="aggregation rule: mean, median, trimmed_mean, krum, or your own as an "
        "import string (my_project.strategy:clipped_mean); all but mean run at the center "
        "only",
    )
    trim_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="fraction trimmed at each end (trimmed_mean)"
    )
    krum_byzantine: int = Field(1, ge=0, description="assumed Byzantine clients f (krum)")

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return _builtin_or_import(value, _SERVER_OPTIMIZERS)

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, value: str) -> str:
        return _builtin_or_import(value, _AGGREGATORS)


_SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
_AGGREGATORS = ("mean", "median", "trimmed_mean", "krum")


def _builtin_or_import(value: str, builtin: tuple[str, ...]) -> str:
    if value in builtin:
        return value
    module, sep, attr = value.partition(":")
    if sep and module and attr.isidentifier():
        return value
    raise ValueError(
        f"must be one of {', '.join(builtin)} or an import string 'package.module:attribute'"
    )


class RoundsConfig(_Strict):
    """Synchronous rounds: how many, the cohort of each, its deadline, evaluation."""

    rounds: int = Field(30, ge=1, description="number of rounds")
    clients_per_round: int | None = Field(None, ge=1, description="None: every client")
    min_clients: int = Field(
        1, ge=1, description="fewest accepted updates for a round to change the model"
    )
    deadline_s: float | None = Field(None, gt=0, description="simulated seconds per round")
    eval_every: int = Field(
        1, ge=1, description="evaluate on the central test set every N rounds (and after the last)"
    )

    @model_validator(mode="before")
    @classmethod
    def _client_eval_moved(cls, data: object) -> object:
        if isinstance(data, dict) and "client_eval" in data:
            raise ValueError(
                "rounds.client_eval was replaced by the evaluation section: "
                "evaluation: {every: 1, clients: N} (see docs/tasks.md)"
            )
        return data


class EvaluationConfig(_Strict):
    """Federated evaluation: clients evaluate the model on their own held-out data.

    See docs/tasks.md: the run store and the report show the weighted mean and the
    distribution over clients (worst 10%, p10/p50/p90, std).
    """

    every: int = Field(
        0, ge=0, description="federated evaluation every N rounds (and after the last); 0: off"
    )
    clients: int | None = Field(
        None, ge=1, description="clients evaluated each time (a seeded sample); None: all"
    )
    fraction: float | None = Field(
        None, gt=0, le=1, description="or this fraction of the clients (not with clients)"
    )
    holdout: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of each client's examples held out from training for it "
        "(0: evaluate on the training data); not with a task's client_test_data",
    )

    @model_validator(mode="after")
    def _one_size(self) -> EvaluationConfig:
        if self.clients is not None and self.fraction is not None:
            raise ValueError("set at most one of evaluation.clients and evaluation.fraction")
        return self

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def sample_size(self, eligible: int) -> int:
        """How many of ``eligible`` clients evaluate each time."""
        if self.clients is not None:
            return min(self.clients, eligible)
        if self.fraction is not None:
            return max(1, min(eligible, round(self.fraction * eligible)))
        return eligible


class DevicesConfig(_Strict):
    """Generated device profiles (or a file of them) for simulated time."""

    profiles_path: Path | None = Field(
        None,
        description="CSV of device profiles (see docs/simulator.md); replaces the generator",
    )
    flops_max: float = Field(2e10, gt=0, description="fastest device, FLOP/s")
    compute_spread: float = Field(1000.0, ge=1, description="fastest / slowest compute")
    uplink_mbps: float = Field(20.0, gt=0, description="median uplink")
    downlink_mbps: float = Field(100.0, gt=0, description="median downlink")
    bandwidth_sigma: float = Field(0.5, ge=0, description="log-normal spread of bandwidth")
    latency_ms: float = Field(40.0, ge=0, description="median one-way latency")
    availability: float = Field(
        1.0, gt=0, le=1, description="probability that a device is online in a round"
    )
    memory_gb: float = Field(4.0, gt=0, description="device memory")
    bf16_speedup: float = Field(
        1.0,
        gt=0,
        description="every generated device's training speed at client.precision bf16 "
        "relative to fp32 (simulated compute divides by it; 1: no speedup)",
    )
    fp16_speedup: float = Field(
        1.0,
        gt=0,
        description="the same for fp16 (below 1 where float16 is slower, e.g. most CPUs)",
    )
    dropout_rate: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="probability that a selected client drops out during a round, after "
        "it was sent the model (synchronous simulators; a seeded draw per client and round)",
    )


class SimConfig(_Strict):
    """How the simulator trains clients: worker processes here, or Ray actors."""

    workers: int | Literal["auto"] = Field(
        "auto",
        description="worker processes; auto: cores - 1 (the main process trains too), 0: none",
    )
    start_method: Literal["auto", "fork", "spawn", "inprocess"] = Field(
        "auto",
        description="how worker processes start. fork: they inherit the data and the "
        "warmed-up framework (Linux); spawn: fresh interpreters that unpickle the job "
        "(macOS, Windows); auto: fork on Linux, spawn elsewhere; inprocess: no workers",
    )
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="intra-op torch threads of each training process (this one and "
        "every worker); auto: 1 for small models (under 1e8 FLOPs per training step), "
        "else cores // (workers + 1). Results are bit-identical for any number of "
        "workers at a fixed thread count",
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="local: this machine's processes; ray: persistent Ray actors "
        "(falls back to local processes, with a warning, when Ray is unavailable)",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster (auto, host:6379, ray://host:10001); None: a local Ray"
    )


class OutputConfig(_Strict):
    """What a run writes (its run directory) and shows (progress bar)."""

    dir: Path = Field(Path("runs"), description="where run directories are created")
    run_store: bool = Field(
        True, description="write a run directory (config, metrics, model, summary)"
    )
    report: bool = Field(True, description="write report.html at the end")
    progress: bool = Field(True, description="show a progress bar")


class FedConfig(_Strict):
    """A whole federation: data, model, client and server algorithms, rounds, devices."""

    name: str = Field("federation", description="name of the run (and of its directory)")
    seed: int = Field(0, ge=0, description="root seed of every random draw")
    task: str | None = Field(
        None,
        description="your own task as an import string (my_project.task:CreditRisk, see "
        "docs/tasks.md); replaces model, and data when the task has client_data",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
    )
    project_dir: Path | None = Field(
        None,
        description="directory the task's module is imported from; default: the config "
        "file's directory (the current directory without a file)",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    rounds: RoundsConfig = RoundsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    devices: DevicesConfig = DevicesConfig()
    compression: CompressionConfig = CompressionConfig()
    downlink: DownlinkConfig = DownlinkConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    secagg: SecAggSettings = SecAggSettings()
    scheduling: SchedulingConfig = SchedulingConfig()
    topology: TopologyConfig = TopologyConfig()
    sim: SimConfig = SimConfig()
    output: OutputConfig = OutputConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    failover: FailoverConfig = FailoverConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @model_validator(mode="after")
    def _cohort_fits(self) -> FedConfig:
        cpr = self.rounds.clients_per_round
        own_data = self.data.name == "npz" or self.task is not None
        if cpr is not None and not own_data and cpr > self.data.num_clients:
            raise ValueError(
                f"rounds.clients_per_round ({cpr}) exceeds data.num_clients "
                f"({self.data.num_clients})"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_fits(self) -> FedConfig:
        e = self.evaluation
        if not e.enabled:
            return self
        own_data = self.data.name == "npz" or self.task is not None
        if e.clients is not None and not own_data and e.clients > self.data.num_clients:
            raise ValueError(
                f"evaluation.clients ({e.clients}) exceeds data.num_clients "
                f"({self.data.num_clients})"
            )
        return self

    @model_validator(mode="after")
    def _features_compose(self) -> FedConfig:
        """Issue 12 part 3: one check of the declared support (docs/compatibility.md),
        then the settings a secure-aggregation ring cannot carry."""
        why = refusal(self)
        if why is not None:
            raise ValueError(why)
        self.failover.check(self.checkpoint)
        if self.privacy.mechanism == "distributed" and not self.secagg.enabled:
            raise ValueError(
                "privacy.mechanism=distributed adds each client's noise share inside secure "
                "aggregation: set secagg.enabled: true (or use mechanism: central)"
            )
        if self.secagg.enabled and self.compression.enabled:
            secagg_compression_fits(self.compression, self.secagg)
        if self.secagg.enabled and self.privacy.enabled:
            secagg_privacy_fits(self.privacy, self.compression, self.devices.availability)
        return self
