"""Secure aggregation driven by the tree engine: added wall time per round (issue 12 part 4).

The same federation as ``bench/secagg_tree.py`` (200 clients in 10 edges of 20 under
2 regions, a 10,000-parameter model, 16-bit ring inputs, integer weights up to 15),
but run by :class:`~fedstrata.sim.hierarchy.HierarchicalSimulation` end to end: the
clients train (a NumPy trainer), encode with the pipeline's
:class:`~fedstrata.secagg.RingCodec`, and 10% of them fail each round (drawn per
round and client); the tree walk folds, closes edges (dropouts recovered there),
finalizes at the center and charges the protocol to the simulated clocks. Two arms
per density: ``plain`` (the same ring codec, a plaintext weighted mean) and
``secure`` (:mod:`fedstrata.sim.tree_secagg`); the difference of their mean
``wall_round_s`` is what secure aggregation adds per round (every party run
serially in this process), the difference of ``sim_round_s`` what it adds to the
simulated round.

Run: ``python bench/secagg_tree_run.py [--quick]``; the last stdout line is JSON.

Results: see docs/secagg.md, "Secure aggregation in a tree" (driven by the engine).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

from fedstrata.algorithms import FedAvg
from fedstrata.compress import randk_support
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.coordinator.planner import Link, TierLinks
from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.core import ArrayDataset, EvalResult, LocalPlan, ParamSpec, TrainResult
from fedstrata.pipeline import Pipeline
from fedstrata.secagg import RingCodec, RingSpec, TreeSecAgg, TreeSecAggOptions
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileDistribution,
    ProfileTable,
    SimSettings,
)
from fedstrata.sim.hierarchy import HierarchicalSimulation, HierSettings
from fedstrata.sim.network import NetworkModel

SIZE = 10_000
EDGES, PER_EDGE, REGIONS = 10, 20, 2
N = EDGES * PER_EDGE
DROP = 0.1
MAX_WEIGHT = 15
LINKS = TierLinks(Link(1e9, 1e-3), Link(1e8, 5e-3), Link(1e7, 20e-3))


class Data:
    """Client i holds 1 + i % 15 examples (the integer weights)."""

    num_clients = N

    def client(self, client_id: int) -> ArrayDataset:
        n = 1 + client_id % MAX_WEIGHT
        x = np.full((n, 1), float(client_id), dtype=np.float32)
        return ArrayDataset(x, np.zeros(n, dtype=np.int64))

    def client_sizes(self) -> np.ndarray:
        return np.array([1 + i % MAX_WEIGHT for i in range(N)])


class Trainer:
    """A random step of scale 0.3; 10% of the clients fail each round."""

    spec = ParamSpec(("w",), ((SIZE,),))
    flops_per_example = 1e8

    def initial_params(self, seed: int) -> np.ndarray:
        return np.zeros(SIZE, dtype=np.float32)

    def train(self, params, data, plan, ctx, out) -> TrainResult:  # type: ignore[no-untyped-def]
        if ctx.rng("dropout").random() < DROP:
            raise RuntimeError("device dropped out")
        out[:] = ctx.rng("step").normal(0.0, 0.3, SIZE).astype(np.float32)
        return TrainResult(len(data), 1, {"train_loss": 0.0})

    def evaluate(self, params, data) -> EvalResult:  # type: ignore[no-untyped-def]
        return EvalResult(loss=0.0, accuracy=0.0, num_examples=len(data))


def _topology() -> Topology:
    edges = [
        TopologyNode(f"e{e}", Tier.EDGE, clients=tuple(range(e * PER_EDGE, (e + 1) * PER_EDGE)))
        for e in range(EDGES)
    ]
    per = EDGES // REGIONS
    regions = tuple(
        TopologyNode(f"r{r}", Tier.REGION, tuple(edges[r * per : (r + 1) * per]))
        for r in range(REGIONS)
    )
    return Topology(TopologyNode("center", Tier.CENTER, regions))


def _arm(density: float, rounds: int, *, secure: bool) -> dict[str, float]:
    codec = RingCodec(RingSpec(1.0, 16, True, density), SIZE, randk_support)
    pipe = Pipeline([], codec)
    options = TreeSecAggOptions(max_weight=MAX_WEIGHT, dropout_rate=DROP, root_seed=7)
    data = Data()
    job = ClientJob(trainer_factory=Trainer, data=data, root_seed=7, pipeline=pipe)
    sim = HierarchicalSimulation(
        SimSettings(rounds, LocalPlan(lr=0.1), eval_every=0, root_seed=7), HierSettings(),
        _topology(), NetworkModel(LINKS), Trainer(), InProcessExecutor(job, SIZE),
        data.client_sizes(), None,
        ProfileTable.generate(N, ProfileDistribution(), np.random.default_rng(0)),
        FedAvg(), pipe, coordinator=RoundCoordinator(RoundPolicy(root_seed=7)),
        secure=TreeSecAgg(codec, options) if secure else None,
    )  # fmt: skip
    res = sim.run(np.zeros(SIZE, dtype=np.float32))
    ms = res.rounds
    return {
        "wall_round_s": float(np.mean([m.wall_round_s for m in ms])),
        "sim_round_s": float(np.mean([m.sim_round_s for m in ms])),
        "bytes_up": float(np.mean([m.bytes_up for m in ms])),
        "completed": float(np.mean([m.clients_completed for m in ms])),
        "failed": float(np.mean([m.clients_failed for m in ms])),
        "secagg_wall_s": float(
            np.mean([(m.secagg_tree and m.secagg_tree.wall_s) or 0.0 for m in ms])
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds per arm")
    rounds = 2 if parser.parse_args().quick else 5
    logging.basicConfig(level=logging.ERROR)
    out: dict[str, float] = {"clients": N, "edges": EDGES, "regions": REGIONS, "rounds": rounds}
    start = time.perf_counter()
    for density in (0.1, 1.0):
        plain = _arm(density, rounds, secure=False)
        sec = _arm(density, rounds, secure=True)
        key = f"d{density:g}"
        added = sec["wall_round_s"] - plain["wall_round_s"]
        out |= {
            f"{key}_plain_wall_round_s": plain["wall_round_s"],
            f"{key}_secure_wall_round_s": sec["wall_round_s"],
            f"{key}_added_wall_s_per_round": added,
            f"{key}_secagg_component_wall_s": sec["secagg_wall_s"],
            f"{key}_plain_sim_round_s": plain["sim_round_s"],
            f"{key}_secure_sim_round_s": sec["sim_round_s"],
            f"{key}_bytes_up_ratio": sec["bytes_up"] / plain["bytes_up"],
            f"{key}_completed": sec["completed"],
            f"{key}_failed": sec["failed"],
        }
        print(f"density {density:g}: added wall {added:.3f} s/round "
              f"(plain {plain['wall_round_s']:.3f}, secure {sec['wall_round_s']:.3f}); "
              f"sim round {plain['sim_round_s']:.3f} -> {sec['sim_round_s']:.3f} s; "
              f"completed {sec['completed']:.0f}/{N}")  # fmt: skip
    out["bench_wall_s"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
