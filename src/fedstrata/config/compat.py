"""Declared feature support (issue 12 part 3): which features compose, one declaration.

Three tables, all data:

- :data:`FEATURES`: every optional feature a configuration can switch on, how to see
  it on a :class:`~fedstrata.config.FedConfig`, the setting that turns it on, its
  docs page, an example (the overrides the pair matrix uses) and the features it
  needs (one of them) to take effect;
- :data:`DRIVERS`: what each driver (flat simulator, FedBuff, hierarchical simulator,
  deployment runtime) runs;
- :data:`REFUSALS`: the pairs of features that do not combine, each with its reason
  and whether that reason holds in principle or the combination is not built yet.

:func:`refusal` checks a configuration against them: :class:`FedConfig` calls it for
the simulator drivers, :func:`fedstrata.runtime.check_supported` for the runtime. A
combination that becomes supported is one deleted :data:`REFUSALS` entry (or one
feature added to a driver's set); ``docs/compatibility.md`` is generated from these
tables (:mod:`fedstrata.config.compat_table`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = [
    "DRIVERS",
    "FEATURES",
    "REFUSALS",
    "RUNTIME",
    "Driver",
    "Feature",
    "Refusal",
    "driver_for",
    "enabled_features",
    "feature",
    "refusal",
]

Detect = Callable[["FedConfig"], bool]


@dataclass(frozen=True)
class Feature:
    """One optional feature.

    Attributes:
        key: short name (``compression``), used by the tables and the pair matrix.
        title: what it is, for messages and the docs.
        setting: the configuration key that switches it on.
        docs: the docs page that describes it.
        on: whether a configuration has it switched on.
        example: overrides that switch it on (with what it needs) in a small run.
        needs: it takes effect only with one of these features (empty: on its own).
    """

    key: str
    title: str
    setting: str
    docs: str
    on: Detect
    example: tuple[str, ...]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Two features that do not combine (delete the entry once they do).

    Attributes:
        pair: the two feature keys.
        reason: why, as the error message and the docs say it.
        in_principle: True when the reason holds for any implementation; False when
            the combination is not built yet.
        when: a narrower condition on the configuration (None: whenever both are on).
        condition: ``when`` in words, for the docs.
        example: overrides that make ``when`` hold (for the tests and the table).
    """

    pair: tuple[str, str]
    reason: str
    in_principle: bool
    when: Detect | None = None
    condition: str = ""
    example: tuple[str, ...] = ()


@dataclass(frozen=True)
class Driver:
    """What moves a federation's bytes and time, and the features it runs.

    Attributes:
        key: short name.
        title: for messages and the docs.
        selected_by: the feature that selects this simulator driver (None: the flat
            default, or the runtime, which ``fedstrata center`` selects).
        supports: the features it runs; any other feature is refused.
        docs: its docs page.
    """

    key: str
    title: str
    selected_by: str | None
    supports: frozenset[str]
    docs: str


_ROBUST = ("median", "trimmed_mean", "krum")


def _sampling(c: FedConfig) -> bool:
    cpr, own = c.rounds.clients_per_round, c.data.name == "npz" or c.task is not None
    return cpr is not None and (own or cpr < c.data.num_clients)


_PAIR_FLAT = ("rounds.clients_per_round=4",)

FEATURES: tuple[Feature, ...] = (
    Feature(
        "sampling",
        "client sampling",
        "rounds.clients_per_round",
        "docs/simulator.md",
        _sampling,
        _PAIR_FLAT,
    ),
    Feature(
        "deadline",
        "round deadline",
        "rounds.deadline_s",
        "docs/scheduling.md",
        lambda c: c.rounds.deadline_s is not None,
        ("rounds.deadline_s=0.12",),
    ),
    Feature(
        "compression",
        "uplink compression",
        "compression.preset",
        "docs/compression.md",
        lambda c: c.compression.enabled,
        ("compression.preset=int8",),
    ),
    Feature(
        "downlink",
        "downlink compression",
        "downlink.preset",
        "docs/compression.md",
        lambda c: c.downlink.enabled,
        ("downlink.preset=int8",),
    ),
    Feature(
        "privacy",
        "central differential privacy",
        "privacy.mechanism",
        "docs/privacy.md",
        lambda c: c.privacy.enabled,
        ("privacy.mechanism=central",),
    ),
    Feature(
        "secagg",
        "secure aggregation",
        "secagg.enabled",
        "docs/secagg.md",
        lambda c: c.secagg.enabled,
        ("secagg.enabled=true", "secagg.dropout_rate=0.4"),
    ),
    Feature(
        "hierarchy",
        "hierarchical topology",
        "topology.mode",
        "docs/hierarchy.md",
        lambda c: c.topology.mode != "flat",
        (
            "topology.mode=auto",
            "topology.edge_size=2",
            "topology.edge_min=1",
            "topology.edge_max=4",
            "topology.region_min=1",
            "topology.region_size=2",
        ),
    ),
    Feature(
        "allocation",
        "work allocation",
        "scheduling.allocation",
        "docs/scheduling.md",
        lambda c: c.scheduling.allocation,
        ("scheduling.allocation=true", "rounds.deadline_s=0.3", "scheduling.max_steps=3"),
        needs=("deadline",),
    ),
    Feature(
        "oort",
        "Oort selection",
        "scheduling.selector",
        "docs/scheduling.md",
        lambda c: c.scheduling.selector == "oort",
        ("scheduling.selector=oort",),
    ),
    Feature(
        "overselect",
        "over-selection",
        "scheduling.overselect",
        "docs/scheduling.md",
        lambda c: c.scheduling.overselect > 0,
        ("scheduling.overselect=0.5", "scheduling.selector=oort", *_PAIR_FLAT),
        needs=("allocation", "oort", "registry"),
    ),
    Feature(
        "registry",
        "device registry",
        "scheduling.registry_url",
        "docs/scheduling.md",
        lambda c: c.scheduling.registry_url is not None,
        ("scheduling.registry_url={tmp}/devices.db",),
    ),
    Feature(
        "async",
        "buffered asynchronous aggregation (FedBuff)",
        "scheduling.async.enabled",
        "docs/scheduling.md",
        lambda c: c.scheduling.async_.enabled,
        (
            "scheduling.async.enabled=true",
            "scheduling.async.concurrency=4",
            "scheduling.async.buffer_size=3",
        ),
    ),
    Feature(
        "robust",
        "robust aggregator",
        "server.aggregator",
        "docs/configuration.md",
        lambda c: c.server.aggregator in _ROBUST,
        ("server.aggregator=median",),
    ),
    Feature(
        "custom_aggregator",
        "your own aggregator",
        "server.aggregator",
        "docs/tasks.md",
        lambda c: ":" in c.server.aggregator,
        ("server.aggregator=fedstrata.aggregation:CoordinateMedian",),
    ),
    Feature(
        "fedeval",
        "federated evaluation",
        "evaluation.every",
        "docs/tasks.md",
        lambda c: c.evaluation.enabled,
        ("evaluation.every=1", "evaluation.clients=3"),
    ),
)

_ALL = frozenset(f.key for f in FEATURES)
_DRIVER_SELECTORS = frozenset({"hierarchy", "async"})

DRIVERS: tuple[Driver, ...] = (
    Driver(
        "flat", "flat synchronous simulator", None, _ALL - _DRIVER_SELECTORS,
        "docs/simulator.md",
    ),
    Driver(
        "async", "FedBuff simulator", "async",
        frozenset({
            "async", "sampling", "registry", "fedeval", "compression", "downlink", "robust",
            "custom_aggregator",
        }),
        "docs/scheduling.md",
    ),
    Driver(
        "hierarchical", "hierarchical simulator", "hierarchy",
        frozenset({
            "hierarchy", "fedeval", "sampling", "deadline", "compression", "downlink",
            "privacy", "allocation", "oort", "overselect", "registry", "robust",
        }),
        "docs/hierarchy.md",
    ),
)  # fmt: skip

RUNTIME = Driver(
    "runtime", "deployment runtime", None,
    frozenset({"sampling", "deadline", "compression", "robust", "custom_aggregator"}),
    "docs/runtime.md",
)  # fmt: skip

_NOT_BUILT = "not built yet"
_ASYNC_POISSON = (
    "the accountant composes Poisson-subsampled rounds (each client sampled "
    "independently at rate q, one noised sum per round); buffered asynchronous arrivals "
    "form no such rounds: who lands in a buffer depends on device speed and staleness, "
    "not on an independent draw"
)


def _periods(c: FedConfig) -> bool:
    return c.topology.kappa_edge * c.topology.kappa_region > 1


def _lossy_partials(c: FedConfig) -> bool:
    t = c.topology.partial_compression
    if not t.enabled:
        return False
    spec = t.spec()
    return spec.sparsify != "none" or spec.quantize != 32


def _skips_infeasible(c: FedConfig) -> bool:
    return c.scheduling.skip_infeasible


REFUSALS: tuple[Refusal, ...] = (
    Refusal(
        ("secagg", "robust"),
        "a robust aggregator must see individual updates; secure aggregation reveals "
        "only their sum",
        in_principle=True,
    ),
    Refusal(
        ("secagg", "custom_aggregator"),
        "your own aggregator sees individual updates; secure aggregation reveals only their sum",
        in_principle=True,
    ),
    Refusal(
        ("secagg", "compression"),
        "secure aggregation encodes updates into its own ring (secagg.density sends a "
        "cohort-shared random-k support); other uplink codecs under it are " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("secagg", "privacy"),
        "central DP samples Poisson cohorts and weights clients uniformly; with secure "
        "aggregation (distributed noise) it is " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("secagg", "allocation"),
        "secure aggregation replaces the settlement-weighted aggregator, so partial work "
        "would be weighted as full work; " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("secagg", "hierarchy"),
        "two-tier masks (secagg.tree.TreeSecAgg) driven by the tree engine are " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("secagg", "async"),
        "secure aggregation needs a cohort that agrees keys and secret-shares them before "
        "any input is masked; a FedBuff buffer is formed only after the updates arrive",
        in_principle=True,
    ),
    Refusal(
        ("privacy", "async"),
        _ASYNC_POISSON,
        in_principle=True,
    ),
    Refusal(
        ("allocation", "async"),
        "allocation sizes work to a round deadline; FedBuff has no rounds and no deadline",
        in_principle=True,
    ),
    Refusal(
        ("deadline", "async"),
        "FedBuff has no rounds to close at a deadline; stale updates are bounded by "
        "scheduling.async.max_staleness instead",
        in_principle=True,
    ),
    Refusal(
        ("overselect", "async"),
        "FedBuff has no cohort to over-select: scheduling.async.concurrency clients are "
        "always in flight",
        in_principle=True,
    ),
    Refusal(
        ("oort", "async"),
        "Oort picks a cohort per round from its utility feedback; FedBuff's dispatcher "
        "starts one idle client at a time and has no Oort policy: " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("privacy", "overselect"),
        "Poisson sampling has no fixed cohort to over-select; raise "
        "rounds.clients_per_round instead, which raises q and the accountant sees it",
        in_principle=True,
    ),
    Refusal(
        ("privacy", "oort"),
        "Oort selects clients by a utility computed from their training losses, so one "
        "client's data changes who else is selected; the accountant assumes Poisson "
        "sampling, every client independently at rate q",
        in_principle=True,
    ),
    Refusal(
        ("privacy", "allocation"),
        "under privacy the cohort is a Poisson sample of every available client at rate q "
        "and the noisy sum is divided by the expected cohort q*N; leaving out devices "
        "predicted to miss the deadline from that sample is " + _NOT_BUILT + " (set "
        "scheduling.skip_infeasible: false: they send the steps they finish or are late)",
        in_principle=False,
        when=_skips_infeasible,
        condition="scheduling.skip_infeasible (the default)",
    ),
    Refusal(
        ("privacy", "custom_aggregator"),
        "central DP calibrates its noise to the mean of clipped updates; the sensitivity "
        "of your own aggregation rule is unknown",
        in_principle=True,
    ),
    Refusal(
        ("privacy", "robust"),
        "central DP calibrates its noise to the mean of clipped updates; noise calibrated "
        "to a robust rule's sensitivity is " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("privacy", "fedeval"),
        "per-client evaluation results are not covered by the privacy accountant; "
        "private federated evaluation is " + _NOT_BUILT,
        in_principle=False,
    ),
    Refusal(
        ("privacy", "hierarchy"),
        "with kappa_edge * kappa_region > 1 a client sends several clipped updates per "
        "global round and the accountant counts one; accounting for the periods is "
        + _NOT_BUILT,
        in_principle=False,
        when=_periods,
        condition="kappa_edge * kappa_region > 1",
        example=("topology.kappa_edge=2",),
    ),
    Refusal(
        ("privacy", "hierarchy"),
        "a lossy topology.partial_compression re-encodes an edge's sum, which is then no "
        "longer within clip_norm per client; clipping the partials is " + _NOT_BUILT,
        in_principle=False,
        when=_lossy_partials,
        condition="lossy topology.partial_compression",
        example=("topology.partial_compression.preset=int8",),
    ),
    Refusal(
        ("allocation", "hierarchy"),
        "with kappa_edge * kappa_region > 1 a client trains several times per global "
        "round; the planner sizes one local training per round: " + _NOT_BUILT,
        in_principle=False,
        when=_periods,
        condition="kappa_edge * kappa_region > 1",
        example=("topology.kappa_edge=2",),
    ),
)


def feature(key: str) -> Feature:
    """The feature named ``key``.

    Raises:
        KeyError: no feature has that key.
    """
    for f in FEATURES:
        if f.key == key:
            return f
    raise KeyError(key)


def enabled_features(config: FedConfig) -> tuple[Feature, ...]:
    """The features ``config`` switches on, in :data:`FEATURES` order."""
    return tuple(f for f in FEATURES if f.on(config))


def driver_for(config: FedConfig) -> Driver:
    """The simulator driver that runs ``config``: hierarchical, FedBuff, else flat."""
    on = {f.key for f in enabled_features(config)}
    for d in DRIVERS:
        if d.selected_by is not None and d.selected_by in on:
            return d
    return DRIVERS[0]


def _name(f: Feature) -> str:
    return f"{f.title} ({f.setting}, {f.docs})"


def refusal(config: FedConfig, driver: Driver | None = None) -> str | None:
    """Why ``config`` cannot run (None: it can), on ``driver`` (default: its simulator).

    The message names both features with their settings and docs pages, and the
    reason; see docs/compatibility.md for every pair.
    """
    on = enabled_features(config)
    keys = {f.key for f in on}
    for r in REFUSALS:
        if set(r.pair) <= keys and (r.when is None or r.when(config)):
            a, b = (feature(k) for k in r.pair)
            return f"{_name(a)} does not combine with {_name(b)}: {r.reason}"
    for f in on:
        if f.needs and not keys & set(f.needs):
            wanted = " or ".join(_name(feature(k)) for k in f.needs)
            return f"{_name(f)} takes effect only with {wanted}: set one"
    chosen = driver or driver_for(config)
    needed = {k for f in on for k in f.needs}  # name what was asked for before its needs
    for f in sorted(on, key=lambda f: f.key in needed):
        if f.key not in chosen.supports:
            return _unsupported(chosen, f)
    return None


def _unsupported(driver: Driver, f: Feature) -> str:
    why = (
        f"the {driver.title} ({driver.docs}) does not run {f.title}; {_NOT_BUILT} "
        f"(leave {f.setting} at its default)"
    )
    if driver.selected_by is None:
        return f"{_name(f)} is not supported by the {driver.title}: {why}"
    return f"{_name(feature(driver.selected_by))} does not combine with {_name(f)}: {why}"
