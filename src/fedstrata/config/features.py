"""Configuration sections of the optional features: compression, privacy, secure
aggregation, scheduling and the aggregation tree."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field, model_validator

from fedstrata.compress import CompressionSpec, resolve_spec
from fedstrata.config.base import Strict as _Strict
from fedstrata.errors import ConfigError

if TYPE_CHECKING:
    from fedstrata.secagg import RingSpec

__all__ = [
    "CompressionConfig",
    "DownlinkConfig",
    "FedBuffSection",
    "PrivacyConfig",
    "SchedulingConfig",
    "SecAggSettings",
    "TopologyConfig",
    "secagg_compression_fits",
    "secagg_privacy_fits",
]


class CompressionConfig(_Strict):
    """A compression chain: a ``preset`` (see ``docs/compression.md``) and overrides.

    Fields left unset come from the preset (default ``none``: dense float32). A bare
    preset name stands for the section: ``compression: int8``.
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

    @model_validator(mode="before")
    @classmethod
    def _preset_shorthand(cls, data: object) -> object:
        """``compression: topk1_int8_ef`` means ``compression: {preset: topk1_int8_ef}``."""
        return {"preset": data} if isinstance(data, str) else data

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


def _check_dp_methods(p: PrivacyConfig) -> None:
    """Adaptive clipping and DP-FTRL are central-DP methods with a uniform schedule."""
    for name in ("adaptive_clip", "tree_aggregation"):
        if getattr(p, name) and p.mechanism != "central":
            raise ValueError(f"privacy.{name} runs with privacy.mechanism=central only")
    if p.tree_aggregation and p.accountant == "pld":
        raise ValueError(
            "privacy.tree_aggregation (DP-FTRL) is accounted with dp-accounting's RDP of "
            "tree aggregation: set privacy.accountant to rdp or auto"
        )
    if p.tree_aggregation and p.schedule != "uniform":
        raise ValueError(
            "privacy.tree_aggregation (DP-FTRL) runs with privacy.schedule=uniform: its "
            "accountant covers one noise level for the whole run"
        )
    if p.clip_norm_max is not None and p.clip_norm_max < p.clip_norm:
        raise ValueError(
            f"privacy.clip_norm_max={p.clip_norm_max} must be >= clip_norm={p.clip_norm}"
        )


class PrivacyConfig(_Strict):
    """User-level differential privacy (see ``docs/privacy.md``).

    ``mechanism: central`` clips every update to ``clip_norm``, weights clients
    uniformly, samples the cohort by Poisson sampling at rate
    ``clients_per_round / num_clients``, adds Gaussian noise at the server, and stops
    training when the (epsilon, delta) budget would be exceeded. ``schedule: staged``
    splits the budget over stages of the planned rounds (``stage_fractions``) by
    ``stage_weights``; ``uniform`` (the default) is one stage.

    ``mechanism: distributed`` (with ``secagg.enabled``, Issue 12 part 4) samples a
    fixed-size cohort of ``clients_per_round``, clips every update to ``clip_norm``
    and has each client add a discrete-Gaussian or Skellam share (``noise``) in the
    secure-aggregation ring, so the server sees only the noised sum; accounted with
    RDP (fixed-size sampling), see ``docs/privacy.md``.

    The defaults (``clip_norm`` 0.15, uniform schedule) train the quickstart preset
    at epsilon 2 to ~0.70 accuracy without diverging (docs/privacy.md, "Central DP
    defaults"); a small clip norm takes small, noise-averaging server steps.
    """

    mechanism: Literal["none", "central", "distributed"] = Field(
        "none",
        description="none; central DP (server adds noise; trusted server); or distributed "
        "DP (clients add integer noise shares under secure aggregation; needs "
        "secagg.enabled and accountant rdp)",
    )
    noise: Literal["discrete_gaussian", "skellam"] = Field(
        "discrete_gaussian", description="distributed DP: each client's integer noise share"
    )
    epsilon: float = Field(2.0, gt=0, description="total epsilon budget")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the budget")
    clip_norm: float = Field(
        0.15, gt=0, description="L2 norm every update is clipped to (also the noise scale)"
    )
    schedule: Literal["uniform", "staged"] = Field(
        "uniform", description="uniform: one noise level; staged: budget split over stages"
    )
    stage_weights: tuple[float, ...] = Field((0.3, 0.5, 0.2), description="budget share per stage")
    stage_fractions: tuple[float, ...] | None = Field(
        None, description="share of the planned rounds per stage; default: equal"
    )
    planned_rounds: int | None = Field(None, ge=1, description="default: rounds.rounds")
    accountant: Literal["auto", "pld", "rdp"] = Field(
        "auto",
        description="accountant for the reported ε: auto is PLD (tighter) for Poisson "
        "cohorts and RDP for the fixed-size cohorts of secure aggregation",
    )
    switch_on_plateau: bool = Field(
        False, description="advance the stage early when the test loss plateaus"
    )
    plateau_window: int = Field(5, ge=1, description="rounds per plateau window")
    plateau_tol: float = Field(
        0.01, gt=0, description="relative improvement below which the loss has plateaued"
    )
    adaptive_clip: bool = Field(
        False,
        description="central DP: the server clips each update to a norm that tracks the "
        "clip_quantile of the update norms (Andrew et al. 2021), starting at clip_norm; "
        "the count of unclipped updates is noised and accounted",
    )
    clip_quantile: float = Field(0.5, gt=0, lt=1, description="adaptive_clip: target quantile")
    clip_lr: float = Field(0.2, gt=0, description="adaptive_clip: geometric step size")
    clip_count_noise: float | None = Field(
        None, gt=0, description="adaptive_clip: noise std on the count; default cohort / 20"
    )
    clip_norm_max: float | None = Field(
        None, gt=0, description="adaptive_clip: clients' clip and ceiling; default 10 x clip_norm"
    )
    tree_aggregation: bool = Field(
        False,
        description="central DP as DP-FTRL (Kairouz et al. 2021): tree-aggregated noise on "
        "the running sum of updates, clients in shuffled order (each at most once per "
        "epoch), no sampling amplification; a tree restarts every epoch",
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
        _check_dp_methods(self)
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

    enabled: bool = Field(False, description="run secure aggregation (SecAgg+) on the uplink")
    clip: float = Field(1.0, gt=0, description="per-coordinate clip before fixed point")
    input_bits: int = Field(16, ge=2, le=32, description="signed fixed-point width")
    stochastic: bool = Field(True, description="stochastic (unbiased) rounding to fixed point")
    density: float = Field(1.0, gt=0, le=1, description="share of coordinates sent (random-k)")
    dropout_rate: float = Field(0.1, ge=0, lt=0.5, description="planned; sets degree/threshold")
    sparse_graph: bool = Field(
        True, description="SecAgg+ sparse neighbour graph (False: every pair of clients)"
    )
    precompute_masks: bool = Field(
        False, description="expand masks when keys are shared (mask pool); masking only adds"
    )
    max_weight: int | None = Field(
        None,
        ge=1,
        description="integer weight levels: weights are scaled so the largest client gets "
        "max_weight, then rounded (a narrower ring); None: largest client (1 if uniform)",
    )

    def ring_spec(self, compression: CompressionSpec | None = None) -> RingSpec:
        """The clients' ring encoding; a ``compression`` chain maps onto it.

        Issue 12 part 4: ``sparsify: randk`` + ``density`` become the cohort-shared
        random-k support, ``quantize`` bits + ``stochastic`` the ring's input bits and
        rounding, ``error_feedback`` the clients' residuals (``FedConfig`` refuses the
        parts that cannot enter a ring).
        """
        from fedstrata.secagg import RingSpec  # deferred: imports cryptography

        bits, stochastic, density = self.input_bits, self.stochastic, self.density
        feedback = False
        if compression is not None:
            if compression.sparsify == "randk":
                density = compression.density
            if compression.quantize < 32:
                bits, stochastic = compression.quantize, compression.stochastic
            feedback = compression.error_feedback
        return RingSpec(self.clip, bits, stochastic, density, error_feedback=feedback)


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
    min_fraction: float = Field(
        0.0, ge=0, le=1,
        description="partial work below this share of the assigned steps is dropped",
    )  # fmt: skip
    replay_url: str | None = Field(
        None,
        description="simulator only: replay the per-client steps a deployment recorded "
        "in this registry's round_history instead of allocating (docs/scheduling.md)",
    )
    overselect: float = Field(0.0, ge=0, description="select k * (1 + overselect) clients")
    skip_infeasible: bool = Field(
        True, description="do not select devices predicted to miss the deadline"
    )
    stragglers: Literal["partial", "drop"] = Field(
        "partial",
        description="a device still training at rounds.deadline_s: sends the whole steps "
        "done (partial) or runs on and is dropped as late (drop: FedAvg/FedScale's rule)",
    )
    registry_url: str | None = Field(
        None, description="device registry (SQLite path or PostgreSQL URL); read and written"
    )
    async_: FedBuffSection = Field(FedBuffSection(), alias="async")

    @property
    def enabled(self) -> bool:
        return (
            self.allocation
            or self.selector == "oort"
            or self.registry_url is not None
            or self.overselect > 0
            or self.stragglers == "drop"
        )


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
    edges: dict[str, list[int]] | None = Field(
        None,
        description="explicit tree without regions: edge -> client ids, the edges under "
        "the center (a deployment's center over edge aggregators)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TopologyConfig:
        if self.mode == "explicit" and not (self.regions or self.edges):
            raise ValueError(
                "topology.regions or topology.edges is required when topology.mode is 'explicit'"
            )
        if self.regions is not None and self.edges is not None:
            raise ValueError("give topology.regions or topology.edges, not both")
        if self.edges is not None and self.mode == "auto":
            raise ValueError("topology.edges is an explicit tree: set topology.mode: explicit")
        if self.edges is not None and self.kappa_region != 1:
            raise ValueError(
                "topology.kappa_region counts region rounds, and topology.edges has no "
                "regions: leave it at 1 (topology.kappa_edge sets the edge rounds)"
            )
        if not self.edge_min <= self.edge_size <= self.edge_max:
            raise ValueError("topology needs edge_min <= edge_size <= edge_max")
        if not self.region_min <= self.region_max:
            raise ValueError("topology needs region_min <= region_max")
        if self.mode == "flat":
            self._flat_has_no_tiers()
        return self

    def _flat_has_no_tiers(self) -> None:
        """Tier settings on a flat topology would be accepted and ignored: refuse them."""
        tiered = {
            "topology.partial_compression": self.partial_compression.enabled,
            "topology.kappa_edge": self.kappa_edge != 1,
            "topology.kappa_region": self.kappa_region != 1,
            "topology.edge_failure_rate": self.edge_failure_rate > 0,
            "topology.regions": self.regions is not None,
            "topology.edges": self.edges is not None,
        }
        set_ = [name for name, on in tiered.items() if on]
        if set_:
            verb = "applies" if len(set_) == 1 else "apply"
            raise ValueError(
                f"{', '.join(set_)} {verb} to the tiers of a tree, and topology.mode is "
                "'flat' (clients under the center): set topology.mode to auto or explicit, "
                "or leave them at their defaults"
            )


def secagg_compression_fits(compression: CompressionConfig, secagg: SecAggSettings) -> None:
    """Refuse the compression settings that cannot enter the secure-aggregation ring.

    Issue 12 part 4: random-k on the cohort-shared support and quantization with
    (stochastic) rounding map onto the ring codec; the rest cannot, in principle or
    (error feedback) not yet.

    Raises:
        ValueError: the reason, naming the setting.
    """
    spec = compression.spec()
    if spec.sparsify in ("topk", "topk_approx"):
        raise ValueError(
            f"secagg.enabled with compression.sparsify={spec.sparsify}: each client's top-k "
            "support differs, so masked sums cannot line up coordinate by coordinate; use "
            "sparsify: randk (a support shared by the cohort)"
        )
    if spec.zstd:
        raise ValueError(
            "secagg.enabled with compression.zstd: masked ring elements are uniformly "
            "random, lossless compression cannot shrink them; drop zstd"
        )
    if spec.quantize == 1:
        raise ValueError(
            "secagg.enabled with compression.quantize=1: the ring needs signed fixed point "
            "of at least 2 bits (sign-only values do not sum); use quantize >= 2"
        )
    if compression.block_size is not None:  # not fields_set: a dumped config says null
        raise ValueError(
            "secagg.enabled with compression.block_size: per-block scales differ per "
            "client, so a ring sum cannot be rescaled; the ring uses one cohort-shared "
            "scale (secagg.clip)"
        )
    if spec.sparsify == "randk" and secagg.density < 1.0:
        raise ValueError(
            "set the random-k density in one place: compression.density or secagg.density"
        )


def secagg_privacy_fits(
    privacy: PrivacyConfig, compression: CompressionConfig, availability: float
) -> None:
    """Refuse DP settings the secure-aggregation round cannot honour.

    Raises:
        ValueError: the reason, naming the setting.
    """
    name = f"privacy.mechanism={privacy.mechanism} with secagg.enabled"
    if compression.enabled and compression.spec().error_feedback:
        raise ValueError(
            f"{name} and compression.error_feedback: the residual carries earlier rounds' "
            "updates into this one, so one client's input is no longer bounded by "
            "privacy.clip_norm as the accountant assumes"
        )
    if privacy.accountant == "pld":
        raise ValueError(
            f"{name} samples a fixed-size cohort (secure aggregation fixes it up front), "
            "which dp-accounting accounts with RDP only: set privacy.accountant: rdp"
        )
    if availability < 1:
        raise ValueError(
            f"{name} samples its fixed-size cohort among the online devices; with "
            f"devices.availability={availability} < 1 a client's inclusion probability "
            "exceeds clients_per_round / num_clients, which the accountant assumes"
        )
    if privacy.mechanism == "distributed" and privacy.switch_on_plateau:
        raise ValueError(
            "privacy.mechanism=distributed: clients draw each round's noise share from the "
            "plan fixed before the run, so privacy.switch_on_plateau cannot move a stage"
        )
