"""Issue 18 study: three-tier HierFAVG against flat FedAvg, many seeds, non-IID.

Both arms share, per seed: the devices and their network (``GeoModel`` placement,
clustered into edges and regions by the latency planner), the non-IID split (digits,
label skew ~ Dirichlet(``ALPHA``) per client), the model's initial weights, the client
sampling (``RoundPolicy(clients_per_round=SAMPLE)``: the same seeded draw of the cohort
each global round) and the client uplink compression (top-10% int8 with error feedback,
the same ``ChainCodec`` spec). They differ only in the tree: flat (every client under
the center) against edges that average every edge round, regions every
``KAPPA_EDGE`` edge rounds and the center every ``KAPPA_EDGE * KAPPA_REGION``
(HierFAVG, Liu et al., ICC 2020). Partials above the edge are dense.

Target accuracy ``TARGET`` = 0.75, fixed before the reported runs: a pilot at quick
scale with target 0.80, lr 0.05 and 2 local steps left flat FedAvg short of 0.80 on
every seed within 60 rounds (final 0.69-0.77), so the plan became lr 0.1, 4 steps and
the target 0.75, below every arm's plateau; nothing was tuned after that. Figures per seed: center
(= global) rounds to the first evaluation at or above the target, and the simulated
seconds per global round. Reported: the median over seeds of flat's rounds / the
hierarchy's (above 1 = fewer center rounds for the hierarchy), the median of the
hierarchy's simulated round time / flat's, and the price: each global round of the
tree trains every cohort member ``KAPPA_EDGE * KAPPA_REGION`` = 8 times (one local
training per edge round) against once in flat FedAvg, so
``hier_client_work_ratio_median`` (local trainings to the target, tree / flat) says
how much more device compute the fewer center rounds cost.

Quick: 2 regions x 2 edges x 10 devices = 40 devices, 16 sampled per round, MLP 64 ->
32 -> 10 (2,410 parameters). Full: 4 x 5 x 20 = 400 devices, 160 sampled per round,
MLP 64 -> 256 -> 10; both 5 seeds by default. The small models make the WAN cheap, so
the round-time ratio here is for a light model; bench/hierarchy.py measures the
round time of a 1M-parameter model behind a thin WAN.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from _common import quiet_library
from fedstrata.algorithms import FedAvg
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.coordinator import RoundCoordinator, RoundPolicy, Topology
from fedstrata.coordinator.planner import ClusterBounds, Link, TierLinks, plan_topology
from fedstrata.core import LocalPlan
from fedstrata.core.state import MemoryStateStore
from fedstrata.data import make_federated
from fedstrata.pipeline import Pipeline
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
)
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import GeoModel, NetworkModel

TARGET = 0.75
ALPHA = 0.3
KAPPA_EDGE, KAPPA_REGION = 4, 2
SAMPLE_FRACTION = 0.4
LINKS = TierLinks(Link(1e9, 1e-3), Link(1e8, 5e-3), Link(1e7, 20e-3))
PLAN = LocalPlan(batch_size=8, lr=0.1, epochs=None, steps=4)
UPLINK = CompressionSpec(sparsify="topk", density=0.1, quantize=8, error_feedback=True)
DEVICES = ProfileDistribution(2e9, 10.0, 20.0, 50.0, 0.3, 10.0)

__all__ = ["measure"]


@dataclass(frozen=True)
class Scale:
    geo: GeoModel
    hidden: int
    flat_cap: int  # most global rounds for the flat arm
    hier_cap: int


QUICK = Scale(GeoModel(2, 2, 10), 32, 40, 10)
FULL = Scale(GeoModel(4, 5, 20), 256, 150, 40)


@dataclass(frozen=True)
class ArmResult:
    rounds_to_target: int | None
    time_to_target_s: float | None
    round_s: float
    final_acc: float


def _run(sim: HierarchicalSimulation, params: np.ndarray, cap: int) -> ArmResult:
    opt = sim.server_optimizer.init(params)
    times, acc = [], 0.0
    for r in range(cap):
        params, opt, m = sim.run_round(r, params, opt)
        times.append(m.sim_round_s)
        acc = float(m.accuracy or 0.0)
        if m.accuracy is not None and m.accuracy >= TARGET:
            return ArmResult(r + 1, m.sim_time_s, float(np.mean(times)), acc)
    return ArmResult(None, None, float(np.mean(times)), acc)


def _seed(scale: Scale, seed: int) -> dict[str, Any]:
    from fedstrata.torch_adapter import TorchTrainerFactory

    geo = scale.geo
    n = geo.num_devices
    layout = geo.generate(np.random.default_rng(1000 + seed))
    matrix = layout.matrix(geo)
    plan = plan_topology(
        matrix.latency_ms, np.random.default_rng(2000 + seed),
        edges=ClusterBounds(geo.devices_per_edge // 2, 2 * geo.devices_per_edge,
                            geo.devices_per_edge),
        regions=ClusterBounds(1, 2 * geo.edges_per_region, geo.edges_per_region),
        num_clients=n, center_host=n,
    )  # fmt: skip
    data = make_federated("digits", "dirichlet", n, seed, dirichlet_alpha=ALPHA)
    factory = TorchTrainerFactory("mlp", data.input_shape, data.num_classes, hidden=scale.hidden)
    trainer = factory()
    size = trainer.spec.size
    profiles = ProfileTable.generate(n, DEVICES, np.random.default_rng(3000 + seed))
    network = NetworkModel(LINKS, matrix, {**plan.hosts, "center": n})
    per_round = max(1, round(SAMPLE_FRACTION * n))

    def sim(topology: Topology, hier: HierSettings, cap: int) -> HierarchicalSimulation:
        executor = InProcessExecutor(ClientJob(factory, data, seed), size, trainer)
        pipeline = Pipeline([], ChainCodec(UPLINK, size, MemoryStateStore()))
        coordinator = RoundCoordinator(RoundPolicy(per_round, root_seed=seed))
        return HierarchicalSimulation(
            SimSettings(cap, PLAN, root_seed=seed), hier, topology, network, trainer,
            executor, data.client_sizes(), data.test, profiles, FedAvg(),
            pipeline=pipeline, coordinator=coordinator,
        )  # fmt: skip

    params0 = trainer.initial_params(seed)
    flat = _run(sim(Topology.flat(range(n)), HierSettings(), scale.flat_cap), params0,
                scale.flat_cap)  # fmt: skip
    hier = _run(sim(plan.topology, HierSettings(KAPPA_EDGE, KAPPA_REGION), scale.hier_cap),
                params0, scale.hier_cap)  # fmt: skip
    both = flat.rounds_to_target is not None and hier.rounds_to_target is not None
    return {
        "seed": seed,
        "center_rounds_flat": flat.rounds_to_target,
        "center_rounds_hier": hier.rounds_to_target,
        "reduction": flat.rounds_to_target / hier.rounds_to_target if both else None,  # type: ignore[operator]
        # local trainings per client to the target: a global round of the tree is
        # kappa_edge * kappa_region edge rounds, each cohort member training in each
        "client_work_ratio": (
            hier.rounds_to_target * KAPPA_EDGE * KAPPA_REGION / flat.rounds_to_target  # type: ignore[operator]
            if both
            else None
        ),
        "round_s_flat": flat.round_s,
        "round_s_hier": hier.round_s,
        "round_time_ratio": hier.round_s / flat.round_s,
        "time_to_target_ratio": (
            hier.time_to_target_s / flat.time_to_target_s if both else None  # type: ignore[operator]
        ),
        "final_acc_flat": flat.final_acc,
        "final_acc_hier": hier.final_acc,
    }


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(statistics.median(got)) if got and len(got) == len(values) else None


def measure(quick: bool, *, seeds: int | None = None) -> dict[str, Any]:
    """Hierarchy vs flat FedAvg over ``seeds`` seeds (default 5); see the module docstring."""
    scale = QUICK if quick else FULL
    n_seeds = 5 if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {n_seeds}")
    wall = time.perf_counter()
    with quiet_library():
        per_seed = [_seed(scale, s) for s in range(n_seeds)]
    reduction = _median([p["reduction"] for p in per_seed])
    out: dict[str, Any] = {
        "hier_center_rounds_reduction_median": reduction,
        "hier_round_time_ratio": _median([p["round_time_ratio"] for p in per_seed]),
        "hier_time_to_target_ratio_median": _median([p["time_to_target_ratio"] for p in per_seed]),
        "hier_client_work_ratio_median": _median([p["client_work_ratio"] for p in per_seed]),
        "hier_seeds": n_seeds,
        "hier_per_seed": per_seed,
        "hier_target_acc": TARGET,
        "hier_target_rule": "fixed after one pilot (0.80 unreached by flat), before these seeds",
        "hier_split": f"digits, label skew Dirichlet({ALPHA}) per client",
        "hier_devices": scale.geo.num_devices,
        "hier_sampled_per_round": max(1, round(SAMPLE_FRACTION * scale.geo.num_devices)),
        "hier_kappa": [KAPPA_EDGE, KAPPA_REGION],
        "hier_uplink": "top-10% int8 + error feedback, both arms",
        "hier_wall_s": time.perf_counter() - wall,
    }
    if reduction is None:
        out["hier_center_rounds_reduction_note"] = (
            "the target was not reached by both arms on every seed within the round cap "
            f"(flat {scale.flat_cap}, hier {scale.hier_cap}); see hier_per_seed"
        )
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure("--quick" in sys.argv)))
