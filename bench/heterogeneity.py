"""Heterogeneity: 1,000 devices with 1000x compute spread, 100 per round.

Arms (same data, model, devices, seed; the synchronous arms run the same number of
rounds R, async the same number of client updates as the baseline, R x 100):

* baseline   — uniform selection, equal work (1 local epoch), no deadline: wait for all.
* alloc      — uniform selection among devices predicted able to do one step by the
               deadline; each client's steps sized to the deadline (fedstrata.scheduling
               allocation); devices stop at the deadline (partial work, weighted).
* alloc+oort — the same with Oort's utility-based selection.
* async      — FedBuff: 100 clients in flight, equal work, a server step every K=10.

Setup (stated in the output): devices' FLOP/s log-uniform over [flops_max / 1000,
flops_max] with ``flops_max = 5e6`` so that compute, not the network, dominates every
round (equivalently: a model 1000x heavier on 5 GFLOP/s phones); 10 ms latency, 20/100
Mbit/s up/down. The registry holds *advertised* speeds = true speed x lognormal(0.2)
(benchmark measurement error); the predictor starts from them and learns from history.

Data. digits has 1,437 training rows, too few for 1,000 disjoint devices, so each device
holds 32 rows drawn (without replacement within a device, shared across devices) with
label proportions ~ Dirichlet(0.5): non-IID label skew. Synthetic(1, 1) (FedProx's
generator; 1,000 clients, <= 64 examples each) needs no resampling (full run only).

Principled choices, fixed before any run:
* deadline = median over the population of the registry-predicted time for the baseline's
  work (1 epoch): half the devices could finish a full epoch in time.
* target accuracy = 95% of the lower of the two final accuracies compared (final = mean of
  the last 3 evaluations), so that both arms reach it; time-to-accuracy = simulated time
  of the first evaluation at or above the target.
* throughput = accepted examples (samples, with repetition) per simulated second.

Against the baselines users actually run (issue 18): the section printed first comes
from ``bench/_scen_het.py`` (its docstring has the rules): a round deadline that drops
stragglers with 1.3x over-selection (FedScale's default), Oort without allocation, and
the same two with the deadline doubled, over 3 seeds on a smaller federation; its keys
(``het_*``) join the JSON line. The arms above compare allocation with waiting for
every device, the strawman those baselines replace.

Usage: python bench/heterogeneity.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import _scen_het  # the realistic-baselines study; its world pieces are shared (bench/ on sys.path)
from _scen_het import DIST, final_acc, resampled_digits, time_to
from fedstrata.aggregation import WeightedMean
from fedstrata.algorithms import FedAvg
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.core import LocalPlan
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.data import FederatedDataset, make_federated
from fedstrata.scheduling import (
    FedBuffConfig,
    FedBuffServer,
    OortSelector,
    RandomSelector,
    Registry,
    TimePredictor,
)
from fedstrata.sim import (
    ClientJob,
    InProcessExecutor,
    ProfileTable,
    SimSettings,
    Simulation,
)
from fedstrata.sim.async_engine import AsyncSettings, AsyncSimulation
from fedstrata.sim.scheduled import (
    ScheduledPlanner,
    ScheduledSelector,
    ScheduleSettings,
    SettlementWeighted,
    registry_profiles,
)

DEVICES, PER_ROUND, SEED = 1000, 100, 0
PLAN = LocalPlan(batch_size=8, lr=0.05, epochs=1)
ADVERTISED_SIGMA = 0.2
BUFFER_K = 10


@dataclass
class World:
    """What every arm shares."""

    name: str
    data: FederatedDataset
    factory: Any
    devices: ProfileTable
    advertised: ProfileTable
    rounds: int
    deadline_s: float


def make_world(name: str, rounds: int) -> World:
    from fedstrata.torch_adapter import TorchTrainerFactory

    if name == "digits":
        data = resampled_digits(DEVICES, 32, 0.5, SEED)
        kind = "mlp"
    else:
        data = make_federated("synthetic", "iid", DEVICES, SEED, synthetic_max_samples=64)
        kind = "logreg"
    factory = TorchTrainerFactory(
        model=kind, input_shape=data.input_shape, num_classes=data.num_classes, hidden=32
    )
    rng = np.random.default_rng(SEED + 1)
    devices = ProfileTable.generate(DEVICES, DIST, rng)
    noise = np.exp(ADVERTISED_SIGMA * rng.standard_normal(DEVICES))
    advertised = replace_flops(devices, devices.flops * noise)
    world = World(name, data, factory, devices, advertised, rounds, 1.0)
    world.deadline_s = principled_deadline(world)
    return world


def replace_flops(t: ProfileTable, flops: np.ndarray) -> ProfileTable:
    return ProfileTable(
        flops, t.memory_gb, t.uplink_bps, t.downlink_bps, t.latency_s, t.availability
    )


def model_bytes(world: World) -> int:
    return HEADER_SIZE + 4 * world.factory().spec.size


def planner_for(world: World, settings: ScheduleSettings, registry, selector) -> ScheduledPlanner:
    profiles = registry_profiles(world.advertised)
    trainer = world.factory()
    return ScheduledPlanner(
        settings,
        TimePredictor.from_profiles(profiles, trainer.flops_per_example),
        profiles,
        world.devices,
        world.data.client_sizes(),
        flops_per_example=trainer.flops_per_example,
        down_bytes=model_bytes(world),
        up_bytes=model_bytes(world),
        registry=registry,
        selector=selector,
    )


def principled_deadline(world: World) -> float:
    """Median over all devices of the predicted time for one epoch (the baseline's work)."""
    probe = planner_for(world, ScheduleSettings(allocation=False), None, None)
    ids = np.arange(DEVICES, dtype=np.int64)
    steps = -(-np.maximum(world.data.client_sizes(), 1) // PLAN.batch_size)
    return float(np.median(probe.predicted_finish(ids, steps, PLAN.batch_size)))


def _mape(stats: Any) -> float:
    """The predictor's last MAPE of a round's ScheduleStats (NaN before its first)."""
    last = stats.predictor_mape_last
    return float("nan") if last is None else float(last)


def run_rounds(sim: Simulation, params: np.ndarray, max_rounds: int, budget: float) -> list[Any]:
    """Run rounds until ``budget`` accepted samples were trained (or ``max_rounds``)."""
    opt_state: object = sim.server_optimizer.init(params)
    rounds, trained = [], 0.0
    for r in range(max_rounds):
        params, opt_state, m = sim.run_round(r, params, opt_state)
        rounds.append(m)
        trained += m.schedule.throughput_eps * m.sim_round_s
        if trained >= budget:
            break
    return rounds


def run_sync(
    world: World, arm: str, registry: Registry | None, budget: float = float("inf")
) -> dict[str, Any]:
    allocate = arm != "baseline"
    deadline = world.deadline_s if allocate else None
    inner = OortSelector(DEVICES) if arm == "alloc+oort" else RandomSelector()
    settings = ScheduleSettings(deadline_s=deadline, allocation=allocate)
    planner = planner_for(world, settings, registry if allocate else None, inner)
    selector = ScheduledSelector(inner, planner, PLAN.batch_size) if allocate else None
    trainer = world.factory()
    job = ClientJob(world.factory, world.data, SEED)
    sim = Simulation(
        settings=SimSettings(world.rounds, PLAN, root_seed=SEED),
        coordinator=RoundCoordinator(RoundPolicy(PER_ROUND, 1, deadline, SEED), selector),
        trainer=trainer,
        executor=InProcessExecutor(job, trainer.spec.size, trainer),
        client_sizes=world.data.client_sizes(),
        test_data=world.data.test,
        profiles=world.devices,
        server_optimizer=FedAvg(),
        aggregator=SettlementWeighted(WeightedMean(), planner),
        planner=planner,
    )
    wall0 = time.perf_counter()
    rounds = run_rounds(sim, trainer.initial_params(SEED), world.rounds, budget)
    ex = [m.schedule for m in rounds]
    examples = sum(m.schedule.throughput_eps * m.sim_round_s for m in rounds)
    sim_s = rounds[-1].sim_time_s
    return {
        "curve": [(m.sim_time_s, m.accuracy) for m in rounds],
        "rounds": len(rounds),
        "samples": examples,
        "sim_s": sim_s,
        "wall_s": time.perf_counter() - wall0,
        "utilization": float(np.mean([e.mean_utilization for e in ex])),
        "useful_utilization": float(np.mean([e.useful_utilization for e in ex])),
        "throughput": examples / sim_s,
        "dropped": int(sum(e.dropped for e in ex)),
        "partial": int(sum(e.partial for e in ex)),
        "mape_first": _mape(ex[0]),
        "mape_last": _mape(ex[-1]),
        "mean_steps": float(np.mean([e.mean_steps for e in ex])),
    }


def run_async(world: World) -> dict[str, Any]:
    trainer = world.factory()
    job = ClientJob(world.factory, world.data, SEED)
    updates = world.rounds * PER_ROUND // BUFFER_K
    sim = AsyncSimulation(
        settings=AsyncSettings(updates, PER_ROUND, PLAN, eval_every=5, root_seed=SEED),
        server=FedBuffServer(trainer.spec.size, FedBuffConfig(buffer_size=BUFFER_K)),
        trainer=trainer,
        executor=InProcessExecutor(job, trainer.spec.size, trainer),
        client_sizes=world.data.client_sizes(),
        test_data=world.data.test,
        profiles=world.devices,
        server_optimizer=FedAvg(),
    )
    result = sim.run(trainer.initial_params(SEED))
    rounds = result.rounds
    examples = sum(m.fedbuff.throughput_eps * m.sim_round_s for m in rounds)
    return {
        "curve": [(m.sim_time_s, m.accuracy) for m in rounds if m.accuracy is not None],
        "rounds": len(rounds),
        "samples": examples,
        "sim_s": result.sim_time_s,
        "wall_s": result.wall_s,
        "utilization": 1.0,  # every slot is refilled the instant it frees
        "useful_utilization": float("nan"),
        "throughput": examples / result.sim_time_s,
        "staleness": float(np.mean([m.fedbuff.staleness_mean for m in rounds])),
    }


def compare(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    target = 0.95 * min(final_acc(base), final_acc(ours))
    tb, to = time_to(base, target), time_to(ours, target)
    return {
        "target": target,
        "tta_base_s": tb,
        "tta_ours_s": to,
        "tta_ratio": tb / to,
        "throughput_ratio": ours["throughput"] / base["throughput"],
    }


def bench_world(name: str, rounds: int) -> tuple[list[list[str]], dict[str, Any]]:
    world = make_world(name, rounds)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, Registry.open(Path(tmp) / "reg.db") as reg:
        reg.upsert_devices(registry_profiles(world.advertised))
        runs["baseline"] = run_sync(world, "baseline", None)
        for arm in ("alloc", "alloc+oort"):
            runs[arm] = run_sync(world, arm, reg)
        history_rows = len(reg.history())
    runs["async"] = run_async(world)
    base = runs["baseline"]
    rows = []
    out: dict[str, Any] = {"deadline_s": world.deadline_s, "registry_rows": history_rows}
    for arm, r in runs.items():
        c = compare(base, r)
        rows.append(
            [
                f"{name}/{arm}",
                f"{r['utilization']:.3f}",
                f"{r['useful_utilization']:.3f}",
                f"{r['throughput']:.2f}",
                f"{c['throughput_ratio']:.2f}",
                f"{c['target']:.3f}",
                f"{c['tta_ours_s']:.0f}",
                f"{c['tta_ratio']:.2f}",
                f"{final_acc(r):.3f}",
                f"{r['rounds']}",
                f"{r['samples'] / 1e3:.0f}k",
                f"{r['sim_s']:.0f}",
                f"{r['wall_s']:.1f}",
            ]
        )
        out[arm] = {
            **{k: v for k, v in r.items() if k != "curve"},
            **c,
            "final_acc": final_acc(r),
        }
    return rows, out


def main() -> None:
    from _common import emit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    logging.basicConfig(level=logging.ERROR)  # deadline misses are expected here
    rounds = 25 if args.quick else 100
    worlds = ["digits"] if args.quick else ["digits", "synthetic"]
    header = [
        "world/arm", "util", "useful_util", "samples/s", "thr_ratio", "target", "tta_s",
        "tta_ratio", "final_acc", "rounds", "samples", "sim_s", "wall_s",
    ]  # fmt: skip
    table = [header]
    detail: dict[str, Any] = {}
    for w in worlds:
        rows, detail[w] = bench_world(w, rounds)
        table += rows
    study = baselines_study(args.quick)
    d = detail["digits"]
    ours = d["alloc"]
    result = {
        "bench": "heterogeneity",
        "quick": args.quick,
        "devices": DEVICES,
        "per_round": PER_ROUND,
        "rounds": rounds,
        "profile": {"flops_max": DIST.flops_max, "compute_spread": DIST.compute_spread,
                    "latency_ms": DIST.latency_ms, "advertised_sigma": ADVERTISED_SIGMA},
        "target_rule": "0.95 * min(final acc of the two arms), final = mean of last 3 evals",
        "deadline_rule": "median over devices of predicted time for 1 epoch",
        "baseline_utilization": d["baseline"]["utilization"],
        "utilization": ours["utilization"],
        "useful_utilization": ours["useful_utilization"],
        "throughput_ratio": ours["throughput_ratio"],
        "tta_ratio": ours["tta_ratio"],
        "acc_baseline": d["baseline"]["final_acc"],
        "acc_ours": ours["final_acc"],
        # the same figures for allocation + Oort selection (also an allocation arm)
        "utilization_alloc_oort": d["alloc+oort"]["utilization"],
        "throughput_ratio_alloc_oort": d["alloc+oort"]["throughput_ratio"],
        "tta_ratio_alloc_oort": d["alloc+oort"]["tta_ratio"],
        "acc_alloc_oort": d["alloc+oort"]["final_acc"],
        "detail": detail,
        **study,
        "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    emit(table, result)


def baselines_study(quick: bool) -> dict[str, Any]:
    """The realistic baselines (``_scen_het``), printed as a table of seed medians."""
    study = _scen_het.measure(quick)
    print(
        f"realistic baselines ({study['het_devices']} devices, {study['het_per_round']} per "
        f"round, {study['het_rounds']} rounds, median over {study['het_seeds']} seeds; "
        f"best baseline {study['het_best_baseline']}):"
    )
    print(f"{'arm':<18}{'tta_s':>9}{'util':>7}{'useful':>8}{'samples/s':>11}{'final_acc':>10}")
    for arm, m in study["het_arms"].items():
        print(
            f"{arm:<18}{m['tta_s']:>9.1f}{m['utilization']:>7.3f}{m['useful_utilization']:>8.3f}"
            f"{m['throughput_eps']:>11.1f}{m['final_acc']:>10.3f}"
        )
    print(
        f"alloc TTA / best baseline TTA = {study['het_alloc_vs_best_baseline_tta']:.2f}, "
        f"throughput x{study['het_throughput_ratio']:.2f}\n"
    )
    return {k: v for k, v in study.items() if k != "het_per_seed"}


if __name__ == "__main__":
    main()
