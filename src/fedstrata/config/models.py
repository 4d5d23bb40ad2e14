"""Pydantic configuration models: one typed tree, validated once at load time.

Every model forbids unknown keys, so a typo (``client.lrr``) is an error that names
the field instead of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedstrata.compress import CompressionSpec, resolve_spec
from fedstrata.errors import ConfigError

if TYPE_CHECKING:
    from fedstrata.secagg import RingSpec

__all__ = [
    "ClientConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "DownlinkConfig",
    "FedBuffSection",
    "FedConfig",
    "ModelConfig",
    "OutputConfig",
    "PrivacyConfig",
    "RoundsConfig",
    "SchedulingConfig",
    "SecAggSettings",
    "ServerConfig",
    "SimConfig",
    "TopologyConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @model_validator(mode="after")
    def _epochs_xor_steps(self) -> ClientConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("set exactly one of client.epochs and client.steps")
        return self


class ServerConfig(_Strict):
    """Server optimizer (Reddi et al. 2021) and aggregator."""

    optimizer: Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = Field(
        "fedavg", description="server optimizer (Reddi et al. 2021)"
    )
    lr: float = Field(1.0, gt=0, description="server learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="FedAvgM server momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="adaptive optimizers' first-moment decay")
    beta2: float = Field(0.99, ge=0, lt=1, description="adaptive optimizers' second-moment decay")
    tau: float = Field(1e-3, gt=0, description="adaptive optimizers adaptivity tau")
    aggregator: Literal["mean", "median", "trimmed_mean", "krum"] = Field(
        "mean", description="aggregation rule; robust ones run at the center only"
    )
    trim_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="fraction trimmed at each end (trimmed_mean)"
    )
    krum_byzantine: int = Field(1, ge=0, description="assumed Byzantine clients f (krum)")


class RoundsConfig(_Strict):
    rounds: int = Field(30, ge=1, description="number of rounds")
    clients_per_round: int | None = Field(None, ge=1, description="None: every client")
    min_clients: int = Field(
        1, ge=1, description="fewest accepted updates for a round to change the model"
    )
    deadline_s: float | None = Field(None, gt=0, description="simulated seconds per round")
    eval_every: int = Field(
        1, ge=1, description="evaluate the model every N rounds (and after the last)"
    )
    client_eval: int = Field(
        0,
        ge=0,
        description="also evaluate on this many clients' own data (mean, p10, worst); 0: off",
    )


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


class CompressionConfig(_Strict):
    """A compression chain: a ``preset`` (see ``docs/compression.md``) and overrides.

    Fields left unset come from the preset (default ``none``: dense float32).
    """

    preset: str = Field(
        "none", description="a preset name (docs/compression.md); other keys override it"
    )
    sparsify: Literal["none", "topk", "topk_approx", "randk"] | None = Field(
        None, description="sparsifier"
    )
    density: float | None = Field(None, gt=0, le=1, description="fraction of coordinates kept")
    quantize: Literal[32, 8, 4, 2, 1] | None = Field(
        None, description="bits per value (32: no quantization)"
    )
    stochastic: bool | None = Field(None, description="stochastic (unbiased) rounding")
    block_size: int | None = Field(None, ge=1, description="coordinates per quantization scale")
    error_feedback: bool | None = Field(
        None, description="keep what was not sent and add it next time"
    )
    zstd: bool | None = Field(None, description="lossless zstd on the encoded body")
    zstd_level: int | None = Field(None, ge=1, le=22, description="zstd level")

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

    history: int = Field(
        64,
        ge=1,
        description="deltas kept; clients further behind get the full model "
        "(keep it well above num_clients / clients_per_round)",
    )

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

    mechanism: Literal["none", "central"] = Field(
        "none", description="none, or central DP (server adds noise; trusted server)"
    )
    epsilon: float = Field(2.0, gt=0, description="total epsilon budget")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the budget")
    clip_norm: float = Field(1.0, gt=0, description="L2 norm every update is clipped to")
    schedule: Literal["uniform", "staged"] = Field(
        "staged", description="uniform: one noise level; staged: budget split over stages"
    )
    stage_weights: tuple[float, ...] = Field((0.3, 0.5, 0.2), description="budget share per stage")
    stage_fractions: tuple[float, ...] | None = Field(
        None, description="share of the planned rounds per stage; default: equal"
    )
    planned_rounds: int | None = Field(None, ge=1, description="default: rounds.rounds")
    accountant: Literal["pld", "rdp"] = Field(
        "pld", description="accountant for the reported ε (PLD is tighter)"
    )
    switch_on_plateau: bool = Field(
        False, description="advance the stage early when the test loss plateaus"
    )
    plateau_window: int = Field(5, ge=1, description="rounds per plateau window")
    plateau_tol: float = Field(
        0.01, gt=0, description="relative improvement below which the loss has plateaued"
    )

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


class SecAggSettings(_Strict):
    """Secure aggregation (``docs/secagg.md``): the server learns only the cohort's sum.

    Clients clip each coordinate to ``clip``, quantize to ``input_bits`` and send ring
    elements (on a cohort-shared random-k support when ``density < 1``); the center
    runs SecAgg+ over the cohort, recovering failed or late clients as dropouts.
    """

    enabled: bool = False
    clip: float = Field(1.0, gt=0, description="per-coordinate clip before fixed point")
    input_bits: int = Field(16, ge=2, le=32, description="signed fixed-point width")
    stochastic: bool = True
    density: float = Field(1.0, gt=0, le=1, description="share of coordinates sent (random-k)")
    dropout_rate: float = Field(0.1, ge=0, lt=0.5, description="planned; sets degree/threshold")
    sparse_graph: bool = True
    precompute_masks: bool = False
    max_weight: int | None = Field(
        None, ge=1, description="integer weight cap; None: largest client (1 if uniform)"
    )

    def ring_spec(self) -> RingSpec:
        """The clients' ring encoding."""
        from fedstrata.secagg import RingSpec  # deferred: imports cryptography

        return RingSpec(self.clip, self.input_bits, self.stochastic, self.density)


class FedBuffSection(_Strict):
    """Buffered asynchronous aggregation (FedBuff, Nguyen et al. 2022)."""

    enabled: bool = Field(False, description="run FedBuff instead of synchronous rounds")
    concurrency: int = Field(100, ge=1, description="clients training at any moment")
    buffer_size: int = Field(10, ge=1, description="updates per server step (K)")
    server_updates: int | None = Field(
        None, ge=1, description="server steps; None: rounds * clients_per_round / buffer_size"
    )
    max_staleness: int = Field(100, ge=0, description="older updates are dropped")
    staleness_exponent: float = Field(0.5, ge=0, description="weight 1/(1+tau)^exponent")


class SchedulingConfig(_Strict):
    """Heterogeneity-aware scheduling (``docs/scheduling.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    allocation: bool = Field(
        False, description="size each client's local steps to meet rounds.deadline_s"
    )
    selector: Literal["random", "oort"] = Field(
        "random", description="cohort selection: uniform, or Oort's utility x speed"
    )
    min_steps: int = Field(1, ge=1, description="least useful work per client")
    max_steps: int | None = Field(None, ge=1, description="most local steps per client")
    safety: float = Field(0.0, ge=0, lt=1, description="share of the deadline kept in reserve")
    overselect: float = Field(0.0, ge=0, description="select k * (1 + overselect) clients")
    skip_infeasible: bool = Field(
        True, description="do not select devices predicted to miss the deadline"
    )
    registry_url: str | None = Field(
        None, description="device registry (SQLite path or PostgreSQL URL); read and written"
    )
    async_: FedBuffSection = Field(FedBuffSection(), alias="async")

    @property
    def enabled(self) -> bool:
        return self.allocation or self.selector == "oort" or self.registry_url is not None


class TopologyConfig(_Strict):
    """The aggregation tree (``docs/hierarchy.md``): flat, planned, or given.

    ``auto`` clusters clients into edges and edges into regions from a latency matrix
    (``latency_path``, or one generated from a geographic model); ``explicit`` takes
    ``regions: {region: {edge: [client ids]}}``. Edges aggregate every round, regions
    every ``kappa_edge`` edge rounds, the center every ``kappa_region`` region rounds
    (HierFAVG).
    """

    mode: Literal["flat", "auto", "explicit"] = Field("flat", description="tree shape")
    edge_size: int = Field(20, ge=1, description="target clients per edge")
    edge_min: int = Field(10, ge=1, description="fewest clients per edge")
    edge_max: int = Field(20, ge=1, description="most clients per edge")
    region_size: int = Field(5, ge=1, description="target edges per region")
    region_min: int = Field(5, ge=1, description="fewest edges per region")
    region_max: int = Field(10, ge=1, description="most edges per region")
    kappa_edge: int = Field(1, ge=1, description="edge rounds per region aggregation")
    kappa_region: int = Field(1, ge=1, description="region rounds per center aggregation")
    latency_path: Path | None = Field(
        None, description="latency matrix (.csv/.npz, ids 0..n-1 and center); None: generated"
    )
    geo_regions: int = Field(4, ge=1, description="regions of the generated geography")
    lan_mbps: float = Field(1000.0, gt=0, description="device -> edge bandwidth")
    metro_mbps: float = Field(100.0, gt=0, description="edge -> region bandwidth")
    wan_mbps: float = Field(10.0, gt=0, description="region -> center ingress bandwidth")
    lan_ms: float = Field(1.0, ge=0, description="device -> edge latency")
    metro_ms: float = Field(5.0, ge=0, description="edge -> region latency")
    wan_ms: float = Field(20.0, ge=0, description="region -> center latency")
    partial_compression: CompressionConfig = Field(
        CompressionConfig(), description="how edges re-compress partial aggregates"
    )
    edge_failure_rate: float = Field(0.0, ge=0, lt=1, description="per edge per round")
    regions: dict[str, dict[str, list[int]]] | None = Field(
        None, description="explicit tree: region -> edge -> client ids"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TopologyConfig:
        if self.mode == "explicit" and not self.regions:
            raise ValueError("topology.regions is required when topology.mode is 'explicit'")
        if not self.edge_min <= self.edge_size <= self.edge_max:
            raise ValueError("topology needs edge_min <= edge_size <= edge_max")
        if not self.region_min <= self.region_max:
            raise ValueError("topology needs region_min <= region_max")
        return self


class SimConfig(_Strict):
    workers: int | Literal["auto"] = Field(
        "auto",
        description="worker processes; auto: cores - 1 (the main process trains too), 0: none",
    )
    start_method: Literal["fork", "inprocess"] = Field(
        "fork",
        description="fork: persistent worker processes; inprocess: everything in this process",
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
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    client: ClientConfig = ClientConfig()
    server: ServerConfig = ServerConfig()
    rounds: RoundsConfig = RoundsConfig()
    devices: DevicesConfig = DevicesConfig()
    compression: CompressionConfig = CompressionConfig()
    downlink: DownlinkConfig = DownlinkConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    secagg: SecAggSettings = SecAggSettings()
    scheduling: SchedulingConfig = SchedulingConfig()
    topology: TopologyConfig = TopologyConfig()
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

    @model_validator(mode="after")
    def _secagg_combines(self) -> FedConfig:
        if not self.secagg.enabled:
            return self
        if self.compression.enabled:
            raise ValueError("secagg.enabled replaces the uplink codec: disable compression")
        if self.server.aggregator != "mean":
            raise ValueError(
                f"secagg.enabled needs server.aggregator 'mean', got {self.server.aggregator!r}"
            )
        if self.privacy.enabled:
            raise ValueError("secagg.enabled with privacy (Poisson cohorts) is not supported yet")
        return self

    @model_validator(mode="after")
    def _scheduling_fits(self) -> FedConfig:
        s = self.scheduling
        if s.allocation and self.rounds.deadline_s is None:
            raise ValueError("scheduling.allocation needs rounds.deadline_s")
        if s.async_.enabled and (
            self.compression.enabled or self.privacy.enabled or self.secagg.enabled
        ):
            raise ValueError(
                "scheduling.async runs dense, non-private updates: disable compression, "
                "privacy and secagg"
            )
        return self

    @model_validator(mode="after")
    def _privacy_keeps_its_bounds(self) -> FedConfig:
        if not self.privacy.enabled:
            return self
        if self.compression.enabled:
            spec = self.compression.spec()
            if spec.error_feedback or spec.quantize != 32 or spec.sparsify == "randk":
                raise ValueError(
                    "privacy.mechanism=central needs every decoded update within "
                    "privacy.clip_norm; error_feedback, quantize < 32 and randk rescaling "
                    "exceed it: use topk/topk_approx without error feedback, or zstd only"
                )
        if self.scheduling.enabled:
            raise ValueError(
                "privacy.mechanism=central weights every client 1 and samples by Poisson: "
                "it cannot combine with scheduling (work-weighted updates, Oort selection)"
            )
        return self

    @model_validator(mode="after")
    def _hierarchy_fits(self) -> FedConfig:
        if self.topology.mode == "flat":
            return self
        others = {
            "privacy": self.privacy.enabled,
            "secagg": self.secagg.enabled,
            "scheduling": self.scheduling.enabled or self.scheduling.async_.enabled,
            "compression (use topology.partial_compression)": self.compression.enabled,
            "a robust aggregator": self.server.aggregator != "mean",
        }
        clash = [name for name, on in others.items() if on]
        if clash:
            raise ValueError(
                f"a hierarchical topology does not combine with {', '.join(clash)} yet"
            )
        return self
