"""Cost of secure aggregation inside the simulator on workload W1 (../shared/BASELINES.md).

W1 as ``bench/overhead.py`` runs it (preset ``w1``: 100 clients, all of them every
round, MLP 64-128-10, digits shards, 1 local epoch, FedAvg weighted by examples), for
5 rounds, built the way ``fedstrata.api.run`` builds it, once in plaintext (dense
float32, ``WeightedMean``) and once with secure aggregation (``RingCodec`` clipping to
±1 and quantizing stochastically to 16 bits on the clients; ``SecAggAggregator``
running the whole Bonawitz/SecAgg+ protocol for the 100-client cohort at the center,
examples folded into the ring as integer weights). Both run in this process, side by
side; the added time per round is the median round wall time of rounds 2-5 with
secure aggregation minus without. ``secagg`` plans for no dropouts (degree 14,
threshold 8 from ``derive_parameters``; W4's Flower run used 11 shares, threshold 6,
no dropouts); ``secagg_drop10`` plans for 10% dropouts (degree 34, threshold 18).

Flower's SecAgg+ added about 12 s per round on the same workload (W4 in BASELINES.md,
measured on another day): a *recorded* figure, not measured here, and every key that
uses it says so (``..._recorded_12s``). ``bench/secagg_flower.py`` measures Flower in
the same run instead.

Keys of the JSON line: ``n100_added_s_per_round`` (the headline), ``protocol_s``
(the protocol's own wall time per round, every party serially in this process,
each X25519 pair secret computed once for both of its ends as in the tree simulator:
``secagg.prg.PairSecrets``; the parties' charged compute is unchanged),
``speedup_vs_flower_recorded_12s`` (the recorded 12.0 s / added; not a side-by-side
measurement), ``acc_plain`` / ``acc_secagg`` (after round 5),
``quant_rel_err_round1`` (|aggregate with secagg - plaintext| / |plaintext| after
round 1, the quantization error), ``bandwidth_expansion`` (protocol bytes per client,
both ways, over a plaintext float32 upload) and ``uplink_expansion``.

Usage: python bench/secagg_w1.py [--quick] [--repeats N]

Results (2-core shared CPU, --quick): see the issue notes / docs/secagg.md.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from _common import emit, median
from fedstrata.api.components import (
    build_dataset,
    choose_workers,
    executor,
    init_seed,
    local_plan,
    profiles,
    secure_aggregation,
    simulation,
    trainer_factory,
    warm_up,
)
from fedstrata.config import load_config
from fedstrata.config.features import SecAggSettings
from fedstrata.pipeline import Pipeline
from fedstrata.secagg import SecAggAggregator
from fedstrata.sim import ClientJob

ROUNDS = 5
FLOWER_RECORDED_ADDED_S = 12.0  # BASELINES.md, W4: Flower 1.42 SecAgg+, 100 clients (recorded)


@dataclass
class ModeRun:
    """Per-round figures of one 5-round run."""

    round_s: list[float] = field(default_factory=list)
    accs: list[float | None] = field(default_factory=list)
    protocol_s: list[float] = field(default_factory=list)
    secagg: Any = None  # the last round's SecAggStats (None for the plain mode)
    params_round1: Any = None


class World:
    """W1's dataset, trainer factory and initial model, built once like ``api.run``
    (``num_clients``: fewer than W1's 100, e.g. for a quick run; ``rounds`` per run)."""

    def __init__(self, num_clients: int | None = None, rounds: int = ROUNDS) -> None:
        overrides = [f"rounds.rounds={rounds}"]
        if num_clients is not None:
            overrides.append(f"data.num_clients={num_clients}")
        self.rounds = rounds
        self.cfg = load_config(preset="w1", overrides=overrides)
        self.dataset = build_dataset(self.cfg.data)
        self.factory = trainer_factory(self.cfg, self.dataset)
        self.trainer = self.factory()
        self.size = self.trainer.spec.size
        self.n = self.dataset.num_clients
        self.workers = choose_workers(self.cfg, self.n)
        self.profiles = profiles(self.cfg, self.n)
        warm_up(self.trainer, self.dataset, local_plan(self.cfg.client), self.cfg.seed)

    def secagg(self, dropout_rate: float) -> tuple[Pipeline, SecAggAggregator]:
        """The ring codec and secure aggregator ``api.run`` builds for ``secagg.enabled``."""
        cfg = self.cfg.model_copy(
            update={"secagg": SecAggSettings(enabled=True, dropout_rate=dropout_rate)}
        )
        secure = secure_aggregation(cfg, self.size, self.dataset)
        assert secure is not None
        return Pipeline([], secure[0]), secure[1]

    def run(self, pipeline: Pipeline | None, agg: SecAggAggregator | None) -> ModeRun:
        cfg, out = self.cfg, ModeRun()
        job = ClientJob(self.factory, self.dataset, cfg.seed, pipeline)
        with closing(executor(job, self.trainer, self.workers)) as ex:
            params = self.trainer.initial_params(init_seed(cfg))
            sim = simulation(
                cfg, dataset=self.dataset, trainer=self.trainer, executor=ex,
                pipeline=pipeline, params=params, profiles=self.profiles,
            )  # fmt: skip
            if agg is not None:
                sim.aggregator, sim.hooks = agg, (agg,)
            opt_state = sim.server_optimizer.init(params)
            for r in range(self.rounds):
                params, opt_state, m = sim.run_round(r, params, opt_state)
                out.round_s.append(m.wall_round_s)
                out.accs.append(m.accuracy)
                out.protocol_s.append(0.0 if m.secagg is None else m.secagg.protocol_s)
                out.secagg = m.secagg
                if r == 0:
                    out.params_round1 = params.copy()
        return out


def steady(xs: list[float]) -> float:
    return median(xs[1:])  # rounds 2-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat (< 1 minute)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    t0 = time.perf_counter()
    world = World()
    modes: dict[str, list[ModeRun]] = {"plain": [], "secagg": [], "secagg_drop10": []}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits all modes
        modes["plain"].append(world.run(None, None))
        modes["secagg"].append(world.run(*world.secagg(0.0)))
        modes["secagg_drop10"].append(world.run(*world.secagg(0.1)))
    plain_s = median([steady(r.round_s) for r in modes["plain"]])
    result = _summary(world, modes, plain_s)
    result["bench_s"] = round(time.perf_counter() - t0, 1)
    result["repeats"] = repeats
    rows = [["mode", "round ms (2-5)", "added ms", "protocol ms", "acc r5", "bytes x plain"]]
    for name, runs in modes.items():
        round_s = median([steady(r.round_s) for r in runs])
        rows.append(
            [
                name,
                f"{1e3 * round_s:.0f}",
                "-" if name == "plain" else f"{1e3 * (round_s - plain_s):.0f}",
                f"{1e3 * median([steady(r.protocol_s) for r in runs]):.0f}",
                f"{runs[0].accs[-1]:.4f}",
                f"{1.0 if runs[0].secagg is None else runs[0].secagg.bandwidth_expansion:.3f}",
            ]
        )
    emit(rows, result)


def _summary(world: World, modes: dict[str, list[ModeRun]], plain_s: float) -> dict[str, Any]:
    sec, drop = modes["secagg"], modes["secagg_drop10"]
    added = median([steady(r.round_s) for r in sec]) - plain_s
    added10 = median([steady(r.round_s) for r in drop]) - plain_s
    p0 = world.trainer.initial_params(init_seed(world.cfg)).astype(np.float64)
    mean_plain = modes["plain"][0].params_round1 - p0
    mean_sec = sec[0].params_round1 - p0
    rel = float(np.linalg.norm(mean_sec - mean_plain) / np.linalg.norm(mean_plain))
    ex = sec[0].secagg
    return {
        "bench": "secagg_w1",
        "n100_added_s_per_round": round(added, 4),
        "n100_protocol_s_per_round": round(median([steady(r.protocol_s) for r in sec]), 4),
        "flower_recorded_added_s_per_round": FLOWER_RECORDED_ADDED_S,
        "speedup_vs_flower_recorded_12s": round(FLOWER_RECORDED_ADDED_S / max(added, 1e-3), 1),
        "n100_drop10_added_s_per_round": round(added10, 4),
        "n100_drop10_protocol_s_per_round": round(median([steady(r.protocol_s) for r in drop]), 4),
        "speedup_vs_flower_recorded_12s_drop10": round(
            FLOWER_RECORDED_ADDED_S / max(added10, 1e-3), 1
        ),
        "plain_round_s": round(plain_s, 4),
        "acc_plain": modes["plain"][0].accs[-1],
        "acc_secagg": sec[0].accs[-1],
        "acc_secagg_drop10": drop[0].accs[-1],
        "quant_rel_err_round1": round(rel, 6),
        "quant_max_abs_err_round1": float(np.abs(mean_sec - mean_plain).max()),
        "bandwidth_expansion": round(ex.bandwidth_expansion, 4),
        "uplink_expansion": round(ex.bytes_up_per_client / (4 * world.size), 4),
        "bandwidth_expansion_drop10": round(drop[0].secagg.bandwidth_expansion, 4),
        "params": world.size,
        "workers": world.workers,
    }


if __name__ == "__main__":
    main()
