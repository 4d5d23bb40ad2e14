"""Three-tier hierarchical FedAvg vs flat FedAvg behind a thin WAN (issue 4).

Scenario (logistics-like, fixed before any run): devices placed by a geographic model
(``GeoModel``: 4 regions, 5 edge sites per region, 20 devices per site: 400 devices;
``--quick``: 4 x 2 x 10 = 80). The planner clusters them into edges and regions from
the latency matrix alone. Links: LAN 1 Gb/s (1 ms) into an edge, metro 100 Mb/s (5 ms)
into a region, WAN 10 Mb/s (20 ms) into the center, plus the matrix's propagation
latency; every receiver's ingress is shared fairly among concurrent senders. Devices:
FLOP/s log-uniform over [2e8, 2e9], uplink ~20 Mb/s, downlink ~50 Mb/s.

Model and data: MLP 64 -> 13,400 -> 10 (1,005,010 parameters) on sklearn digits,
IID over the devices (3-4 rows each), 2 local SGD steps of batch 8, lr 0.05; training
is real. Arms: flat FedAvg (every device reports to the center), hierarchical with
kappa_edge=4, kappa_region=2 (8 edge rounds per center round), dense partials and
partials re-compressed (top-10% int8 with error feedback) for the hops above the edge.

Target accuracy 0.85 (fixed before the first run). Reported: simulated time per
global (= center) round, center ingress bytes per round, center rounds and simulated
time to the target, and the planner's predicted round time against the simulator's.

The center-rounds figure above is one IID seed. ``bench/_scen_hier.py`` (issue 18)
measures it properly: flat FedAvg with the same uplink compression and the same client
sampling, a non-IID split (Dirichlet(0.3) label skew), 5 seeds, a target fixed before
the reported runs; its keys (``hier_*``, medians over seeds) join the JSON line.

Usage: python bench/hierarchy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstrata.algorithms import FedAvg
from fedstrata.compress import CompressionSpec
from fedstrata.coordinator import Topology
from fedstrata.coordinator.planner import (
    ClusterBounds,
    CostModel,
    Link,
    TierLinks,
    plan_topology,
    predict_round,
)
from fedstrata.core import HEADER_SIZE, LocalPlan
from fedstrata.core.timing import compute_s
from fedstrata.data import make_federated
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
)
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import GeoModel, NetworkModel
from fedstrata.torch_adapter import TorchTrainerFactory

TARGET = 0.85
LINKS = TierLinks(Link(1e9, 1e-3), Link(1e8, 5e-3), Link(1e7, 20e-3))
KAPPA_EDGE, KAPPA_REGION = 4, 2
PLAN = LocalPlan(batch_size=8, lr=0.05, epochs=None, steps=2)
PARTIAL = CompressionSpec(sparsify="topk", density=0.1, quantize=8, error_feedback=True)


@dataclass
class Arm:
    name: str
    rounds_to_target: int | None
    time_to_target_s: float | None
    acc: float
    round_s: float
    center_ingress: float
    wall_s: float


def scenario(quick: bool) -> tuple[GeoModel, int]:
    if quick:
        return GeoModel(4, 2, 10), 12
    return GeoModel(4, 5, 20), 30


def run_arm(name: str, sim: HierarchicalSimulation, params: np.ndarray, max_rounds: int) -> Arm:
    wall = time.perf_counter()
    r_hit = t_hit = None
    opt = sim.server_optimizer.init(params)
    rounds = []
    for r in range(max_rounds):
        params, opt, m = sim.run_round(r, params, opt)
        rounds.append(m)
        if m.accuracy is not None and m.accuracy >= TARGET and r_hit is None:
            r_hit, t_hit = r + 1, m.sim_time_s
            break
    return Arm(
        name,
        r_hit,
        t_hit,
        float(rounds[-1].accuracy or 0.0),
        float(np.mean([m.sim_round_s for m in rounds])),
        float(np.mean([m.tiers.center_ingress_bytes for m in rounds])),
        time.perf_counter() - wall,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    geo, max_rounds = scenario(args.quick)
    n = geo.num_devices
    layout = geo.generate(np.random.default_rng(0))
    matrix = layout.matrix(geo)
    edge_bounds = ClusterBounds(10, 20, geo.devices_per_edge)
    region_bounds = ClusterBounds(1 if args.quick else 5, 10, geo.edges_per_region)
    plan = plan_topology(
        matrix.latency_ms, np.random.default_rng(1), edges=edge_bounds,
        regions=region_bounds, num_clients=n, center_host=n,
    )  # fmt: skip
    data = make_federated("digits", "iid", n, 0)
    factory = TorchTrainerFactory("mlp", data.input_shape, data.num_classes, hidden=13_400)
    trainer = factory()
    executor = InProcessExecutor(ClientJob(factory, data, 0), trainer.spec.size, trainer)
    profiles = ProfileTable.generate(
        n,
        ProfileDistribution(2e9, 10.0, 20.0, 50.0, 0.3, 10.0),
        np.random.default_rng(2),
    )
    params0 = trainer.initial_params(0)
    hosts = {**plan.hosts, "center": n}
    network = NetworkModel(LINKS, matrix, hosts)

    def sim(topology: Topology, hier: HierSettings) -> HierarchicalSimulation:
        return HierarchicalSimulation(
            SimSettings(max_rounds, PLAN, root_seed=0), hier, topology, network, trainer,
            executor, data.client_sizes(), data.test, profiles, FedAvg(),
        )  # fmt: skip

    flat_topo = Topology.flat(range(n))
    hier = HierSettings(KAPPA_EDGE, KAPPA_REGION)
    arms = [
        run_arm("flat", sim(flat_topo, HierSettings()), params0, max_rounds),
        run_arm("hier", sim(plan.topology, hier), params0, max_rounds),
        run_arm(
            "hier+compress",
            sim(plan.topology, HierSettings(KAPPA_EDGE, KAPPA_REGION, PARTIAL)),
            params0,
            max_rounds,
        ),
    ]
    flat, hierarchical, compressed = arms
    preds = predict_times(
        plan,
        flat_topo=flat_topo,
        profiles=profiles,
        sizes=data.client_sizes(),
        trainer=trainer,
        matrix=matrix,
    )
    study = multi_seed(args.quick)
    report(
        geo, plan, trainer.spec.size, arms, preds=preds, trio=(flat, hierarchical, compressed),
        study=study,
    )  # fmt: skip


def predict_times(
    plan: Any,
    *,
    flat_topo: Topology,
    profiles: ProfileTable,
    sizes: Any,
    trainer: Any,
    matrix: Any,
) -> tuple[float, float]:
    examples = np.array([PLAN.num_samples(int(s)) for s in sizes])
    dense = HEADER_SIZE + 4 * trainer.spec.size
    cost = CostModel(
        compute_s(examples, trainer.flops_per_example, profiles.flops, profiles.speedup),
        profiles.uplink_bps, profiles.downlink_bps, dense, dense, dense,
        matrix.latency_ms / 1e3,
    )  # fmt: skip
    n = len(profiles)
    flat = predict_round(flat_topo, cost, LINKS, hosts={"center": n}).global_round_s
    hosts = {**plan.hosts, "center": n}
    hier = predict_round(
        plan.topology, cost, LINKS, kappa_edge=KAPPA_EDGE, kappa_region=KAPPA_REGION, hosts=hosts
    ).global_round_s
    return flat, hier


def report(
    geo: GeoModel,
    plan: Any,
    size: int,
    arms: list[Arm],
    *,
    preds: tuple[float, float],
    trio: Any,
    study: dict[str, Any],
) -> None:
    flat, hier, comp = trio
    edges = [n for n in plan.topology.root.walk() if n.tier.value == "edge"]
    regions = [n for n in plan.topology.root.walk() if n.tier.value == "region"]
    print(
        f"{geo.num_devices} devices, planned {len(regions)} regions / {len(edges)} edges "
        f"(sizes {min(len(e.clients) for e in edges)}-{max(len(e.clients) for e in edges)}); "
        f"model {size:,} params; target acc {TARGET}"
    )
    head = ("arm", "center rnds", "sim s to target", "acc", "sim s/round", "center MB/rnd", "wall")
    print("{:<14}{:>12}{:>16}{:>7}{:>12}{:>14}{:>7}".format(*head))
    for a in arms:
        print(
            f"{a.name:<14}{a.rounds_to_target or -1:>12}{a.time_to_target_s or -1:>16.0f}"
            f"{a.acc:>7.3f}{a.round_s:>12.1f}{a.center_ingress / 1e6:>14.2f}{a.wall_s:>7.1f}"
        )
    err_flat = abs(preds[0] - flat.round_s) / flat.round_s
    err_hier = abs(preds[1] - hier.round_s) / hier.round_s
    print(f"planner: flat {preds[0]:.1f}s (err {err_flat:.1%}), hier {preds[1]:.1f}s "
          f"(err {err_hier:.1%})")  # fmt: skip
    reached = flat.rounds_to_target and hier.rounds_to_target
    result = {
        "bench": "hierarchy",
        "devices": geo.num_devices,
        "params": size,
        "target_acc": TARGET,
        "round_time_ratio": flat.round_s / hier.round_s,
        "ingress_ratio": flat.center_ingress / hier.center_ingress,
        "ingress_ratio_compressed": flat.center_ingress / comp.center_ingress,
        "center_rounds_flat": flat.rounds_to_target,
        "center_rounds_hier": hier.rounds_to_target,
        "center_rounds_hier_compressed": comp.rounds_to_target,
        "center_rounds_reduction": (
            1 - hier.rounds_to_target / flat.rounds_to_target if reached else None
        ),
        "time_to_target_ratio": (
            flat.time_to_target_s / hier.time_to_target_s if reached else None
        ),
        "acc_flat": flat.acc,
        "acc_hier": hier.acc,
        "acc_hier_compressed": comp.acc,
        "planner_rel_error": max(err_flat, err_hier),
        "wall_s": sum(a.wall_s for a in arms),
        **study,
    }
    print(json.dumps(result))


def multi_seed(quick: bool) -> dict[str, Any]:
    """HierFAVG vs flat over 5 seeds, non-IID (``_scen_hier``), printed per seed."""
    import _scen_hier

    study = _scen_hier.measure(quick)
    print(
        f"non-IID, {study['hier_devices']} devices, {study['hier_sampled_per_round']} sampled "
        f"per round, same uplink codec, target {study['hier_target_acc']}:"
    )
    print(f"{'seed':>4}{'flat rnds':>11}{'hier rnds':>11}{'reduction':>11}{'round s ratio':>15}")
    for p in study["hier_per_seed"]:
        red = "-" if p["reduction"] is None else f"{p['reduction']:.2f}"
        print(
            f"{p['seed']:>4}{p['center_rounds_flat'] or -1:>11}{p['center_rounds_hier'] or -1:>11}"
            f"{red:>11}{p['round_time_ratio']:>15.2f}"
        )
    return study


if __name__ == "__main__":
    main()
