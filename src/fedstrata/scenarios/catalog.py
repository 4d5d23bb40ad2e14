"""The published enterprise cases (issue 18), each as a :class:`Scenario`.

Every scenario runs its preset (``src/fedstrata/config/presets/<name>.yaml``, whose
comments state the scaling) twice: the strongest realistic baseline and fedstrata's
configuration. Figures and targets were fixed before the first measured run.
"""

from __future__ import annotations

from fedstrata.scenarios.figures import (
    catalogue_mean,
    cohort_delivery,
    mean_round_s,
    rounds_to_accuracy,
    secagg_protocol_s,
    throughput_eps,
    time_to_accuracy,
    useful_utilization,
)
from fedstrata.scenarios.scenario import Scenario

__all__ = ["SCENARIOS", "get_scenario"]

_QUICK = ("rounds.rounds=1", "rounds.eval_every=1")
_LOGISTICS_CLIENTS = 80
# Flat FL as a depth-one tree: each vehicle is its own pass-through "edge" (a 1 Gb/s,
# 1 ms hop) straight into the center's shared WAN ingress, its update forwarded in the
# client's own top-0.1% int8 encoding; the flat engine models no shared center ingress.
_FLAT_EDGES = "{" + ", ".join(f"v{i}: [{i}]" for i in range(_LOGISTICS_CLIENTS)) + "}"
_DEADLINE_OVERSELECT = (  # FedScale's default against stragglers
    "scheduling.allocation=false",
    "scheduling.selector=random",
    "scheduling.overselect=0.3",
    "scheduling.stragglers=drop",
)
_DIGITS_SIM = "training and evaluation on scikit-learn digits"

_CASES = (
    Scenario(
        name="finance-100-branches",
        case="a 100-branch bank whose round takes 12 h, 8.3 h of it syncing parameters",
        figure="share of the round spent syncing parameters (downlink + uplink)",
        unit="fraction",
        better="lower",
        published_before=8.3 / 12.0,
        published_after=None,
        published_relative=None,
        baseline_name="FedAvg, dense float32 both ways (the bank's setup, links scaled "
        "so it spends the published share syncing)",
        baseline=("compression.preset=none", "downlink.preset=none"),
        optimized=(),
        quick=_QUICK,
        measure=lambda cfg, rounds: catalogue_mean("sync_share", rounds),
        scaling="100 branches 1:1, all in every round; MLP 60-128-10 on generated "
        "tabular records (Synthetic(0.5, 0.5)); branch links scaled down with the model "
        "(0.035/0.2 Mb/s, 200 ms) so the dense baseline syncs ~69% of the round",
        simulated="branch compute time, link transfer time and latency",
        real="local training, the compression codecs (bytes on the wire), evaluation",
        extras={"round time (s)": lambda cfg, rounds: mean_round_s(rounds)},
    ),
    Scenario(
        name="logistics-hierarchy",
        case="a logistics firm's round from 47 to 16 min with three-tier aggregation",
        figure="simulated seconds per center round",
        unit="s",
        better="lower",
        published_before=47.0 * 60,
        published_after=16.0 * 60,
        published_relative=None,
        baseline_name="flat FedAvg, same top-0.1% int8 compression and client sampling, "
        "every transfer through the center's shared 10 Mb/s WAN",
        baseline=(
            "topology.mode=explicit",
            f"topology.edges={_FLAT_EDGES}",
            "topology.kappa_edge=1",
            "topology.partial_compression=topk01_int8_ef",
        ),
        optimized=(),
        quick=_QUICK,
        measure=lambda cfg, rounds: mean_round_s(rounds),
        scaling="80 vehicles in 4 geographic regions (planner: depot edges of 8-12); "
        "LAN 1 Gb/s, metro 100 Mb/s, WAN 10 Mb/s into the center",
        simulated="compute, every tier's links (fair-shared ingress) and latencies",
        real=f"local training, compression and re-compression of partials, {_DIGITS_SIM}",
        extras={
            "simulated s to 0.80 accuracy": lambda cfg, rounds: time_to_accuracy(rounds, 0.80)
        },
    ),
    Scenario(
        name="manufacturing-heterogeneity",
        case="a manufacturer's device utilization from 58% to 82% (and 2.3x throughput)",
        figure="useful device utilization (mean share of the round a device spent on "
        "work that was aggregated)",
        unit="fraction",
        better="higher",
        published_before=0.58,
        published_after=0.82,
        published_relative=None,
        baseline_name="the same round deadline with 1.3x over-selection, stragglers "
        "dropped (FedScale's default), equal work for every device",
        baseline=_DEADLINE_OVERSELECT,
        optimized=(),
        quick=(*_QUICK, "rounds.clients_per_round=20"),
        measure=lambda cfg, rounds: useful_utilization(rounds),
        scaling="200 devices with a 100x compute spread (scaled down with the model so "
        "compute dominates), 50 per round, 4 s deadline",
        simulated="device compute time, links, the deadline",
        real=f"local training (partial work weighted), the time predictor, {_DIGITS_SIM}",
        extras={
            "throughput (examples per simulated s)": lambda cfg, rounds: throughput_eps(rounds),
            "simulated s to 0.80 accuracy": lambda cfg, rounds: time_to_accuracy(rounds, 0.80),
        },
    ),
    Scenario(
        name="secagg-1000",
        case="secure aggregation over 1,000 nodes from 23 to 7 min per round",
        figure="seconds the secure-aggregation protocol takes per round (all parties, "
        "measured on this machine)",
        unit="s",
        better="lower",
        published_before=23.0 * 60,
        published_after=7.0 * 60,
        published_relative=None,
        baseline_name="SecAgg+ as Flower runs it: sparse neighbour graph, dense 16-bit "
        "inputs, masks expanded after the inputs are known",
        baseline=("secagg.precompute_masks=false", "secagg.density=1.0", "secagg.input_bits=16"),
        optimized=(),
        quick=(*_QUICK, "data.num_clients=200", "rounds.clients_per_round=40"),
        measure=lambda cfg, rounds: secagg_protocol_s(rounds),
        scaling="1,000 clients, 100 per round (quick: 200 and 40)",
        simulated="device compute, links and latency",
        real="local training and the whole SecAgg+ protocol (its seconds are measured "
        "on this machine and added to the simulated round)",
    ),
    Scenario(
        name="privacy-staged",
        case="epsilon = 2 reached in 31% fewer rounds with a staged budget",
        figure="rounds to 0.60 test accuracy at epsilon 2",
        unit="rounds",
        better="lower",
        published_before=None,
        published_after=None,
        published_relative=0.69,
        baseline_name="the same (2, 1e-5) budget spent uniformly over the rounds",
        baseline=("privacy.schedule=uniform",),
        optimized=(),
        quick=(*_QUICK, "privacy.planned_rounds=60"),
        measure=lambda cfg, rounds: rounds_to_accuracy(rounds, 0.60),
        scaling="1,000 clients, 100 per round (q = 0.1), 60 planned rounds",
        simulated="nothing timed: the figure counts rounds",
        real=f"clipping, noise, the PLD accountant, local training, {_DIGITS_SIM}",
    ),
    Scenario(
        name="ecommerce-availability",
        case="availability from 92% to 99.7%",
        figure="share of each round's planned cohort whose update reached the aggregate, "
        "8% of selected devices dropping out",
        unit="fraction",
        better="higher",
        published_before=0.92,
        published_after=0.997,
        published_relative=None,
        baseline_name="random selection of exactly the cohort (Flower's FedAvg default: "
        "failures are accepted, no over-selection), same deadline",
        baseline=("scheduling.overselect=0",),
        optimized=(),
        quick=_QUICK,
        measure=cohort_delivery,
        scaling="500 devices, 50 per round, 8% mid-round dropouts, 1.5 s deadline",
        simulated="devices' dropouts (seeded), compute, links, the deadline",
        real=f"local training, {_DIGITS_SIM}",
    ),
    Scenario(
        name="automotive-roadmap",
        case="an automaker's 4.8x training efficiency; model updates from weekly to three "
        "times a day",
        figure="simulated seconds to 0.50 test accuracy (one model update)",
        unit="s",
        better="lower",
        published_before=None,
        published_after=None,
        published_relative=1.0 / 4.8,
        baseline_name="the same deadline with 1.3x over-selection, stragglers dropped, "
        "random selection, dense updates, equal work",
        baseline=(*_DEADLINE_OVERSELECT, "compression.preset=none", "downlink.preset=none"),
        optimized=(),
        quick=("rounds.rounds=4", "rounds.eval_every=1"),
        measure=lambda cfg, rounds: time_to_accuracy(rounds, 0.50),
        scaling="300 vehicles, 300x compute spread, 60 per round on cellular links",
        simulated="vehicle compute, cellular links, the deadline",
        real=f"local training, codecs, Oort's utilities, the time predictor, {_DIGITS_SIM}",
    ),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _CASES}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises:
        ConfigError: no such scenario (the message lists them).
    """
    from fedstrata.errors import ConfigError

    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; available: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]
