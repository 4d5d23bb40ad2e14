"""The refused combinations of the declared support (:mod:`fedstrata.config.compat`):
one entry per pair, with its reason and whether it holds in principle. A combination
that becomes supported is one deleted entry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedstrata.config.compat_types import NOT_BUILT as _NOT_BUILT
from fedstrata.config.compat_types import Refusal

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = ["REFUSALS"]

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


def _partials(c: FedConfig) -> bool:
    return c.topology.partial_compression.enabled


def _skips_before_fixed_draw(c: FedConfig) -> bool:
    """Skipping infeasible devices where the DP cohort is a fixed-size draw (under
    secure aggregation), not central DP's Poisson sample."""
    return c.scheduling.skip_infeasible and c.secagg.enabled


_CKPT_SCHEDULING = (
    "a checkpoint holds the engine's state for an exact resume; the scheduler's "
    "predictor, its Oort statistics and the device registry's round history in a "
    f"checkpoint are {_NOT_BUILT} (a resume would start with a cold predictor and "
    "write registry rows twice)"
)

_SERVER_SEES_SUM = (
    "the server clips each decoded update to the adapted norm and counts the unclipped "
    "ones; under secure aggregation it sees only the sum (Andrew et al. sum the clipping "
    f"bits securely too: {_NOT_BUILT})"
)
_FTRL_ORDER = (
    "DP-FTRL's accountant counts each client at most once per tree: its cohorts are "
    "fixed blocks of a shuffled client order"
)

REFUSALS: tuple[Refusal, ...] = (
    Refusal(("adaptive_clip", "secagg"), _SERVER_SEES_SUM, in_principle=False),
    Refusal(
        ("checkpoint", "adaptive_clip"),
        f"a checkpoint carrying the adapted clip norm is {_NOT_BUILT}",
        in_principle=False,
    ),
    Refusal(
        ("dp_ftrl", "secagg"),
        f"{_FTRL_ORDER}; secure aggregation's fixed-size cohort with the tree is {_NOT_BUILT}",
        in_principle=False,
    ),
    Refusal(
        ("adaptive_clip", "dp_ftrl"),
        "Andrew et al.'s accounting of the clipping bits is for one noised sum per round; "
        f"with the tree's noise it is {_NOT_BUILT}",
        in_principle=False,
    ),
    Refusal(
        ("dp_ftrl", "oort"),
        f"{_FTRL_ORDER}, not a utility-based selection",
        in_principle=True,
    ),
    Refusal(
        ("dp_ftrl", "allocation"),
        f"{_FTRL_ORDER}; leaving devices predicted to miss the deadline out of a block "
        f"is {_NOT_BUILT}",
        in_principle=False,
    ),
    Refusal(
        ("checkpoint", "dp_ftrl"),
        f"a checkpoint carrying the tree's position and ε spent is {_NOT_BUILT}",
        in_principle=False,
    ),
    Refusal(("checkpoint", "allocation"), _CKPT_SCHEDULING, in_principle=False),
    Refusal(("checkpoint", "oort"), _CKPT_SCHEDULING, in_principle=False),
    Refusal(("checkpoint", "registry"), _CKPT_SCHEDULING, in_principle=False),
    Refusal(("checkpoint", "overselect"), _CKPT_SCHEDULING, in_principle=False),
    Refusal(("checkpoint", "drop_stragglers"), _CKPT_SCHEDULING, in_principle=False),
    Refusal(
        ("checkpoint", "async"),
        "a checkpoint is taken between rounds, and FedBuff never pauses: checkpointing its "
        f"clients in flight, their dispatch draws and the partly filled buffer is {_NOT_BUILT}",
        in_principle=False,
    ),
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
        ("secagg", "hierarchy"),
        "with kappa_edge * kappa_region > 1 an edge or region averages its cluster's sum "
        "between center rounds, and two-tier masks hide that sum from it until the center",
        in_principle=True,
        when=_periods,
        condition="kappa_edge * kappa_region > 1",
        example=("topology.kappa_edge=2",),
    ),
    Refusal(
        ("secagg", "hierarchy"),
        "an edge holds only its masked ring sum; re-encoding it (topology.partial_compression) "
        "would break the masks' cancellation",
        in_principle=True,
        when=_partials,
        condition="topology.partial_compression",
        example=("topology.partial_compression.preset=int8",),
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
        ("overselect", "async"),
        "FedBuff has no cohort to over-select: scheduling.async.concurrency clients are "
        "always in flight",
        in_principle=True,
    ),
    Refusal(
        ("deadline", "async"),
        "FedBuff has no rounds to close at a deadline; stale updates are bounded by "
        "scheduling.async.max_staleness instead",
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
        "under secure aggregation the DP cohort is a fixed-size draw of k of all N "
        "clients, accounted at rate k/N; leaving out devices predicted to miss the "
        "deadline before that draw would raise the others' inclusion probability above "
        "k/N, and dropping them after it is " + _NOT_BUILT + " (set "
        "scheduling.skip_infeasible: false: they send the steps they finish or are late)",
        in_principle=False,
        when=_skips_before_fixed_draw,
        condition="scheduling.skip_infeasible (the default) with secure aggregation",
        example=("secagg.enabled=true", "privacy.mechanism=distributed"),
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
        "global round and the accountant counts one; accounting for the periods is " + _NOT_BUILT,
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
