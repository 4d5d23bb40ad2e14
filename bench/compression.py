"""Accuracy versus bytes of the compression chains, end to end (issue 3).

Digits: the federation of the ``quickstart`` preset (100 clients, Dirichlet 0.5, 20
clients per round, 100 rounds, 2 local epochs, MLP 64-128-10 = 9,610 parameters),
seed 0 (the preset's), run with every chain below through ``fedstrata.api.run``
(``output.run_store=false``). Synthetic(1,1) (FedProx): 100 clients, logistic
regression (610 parameters), 10 clients per round, 200 rounds of 20 local steps
(batch 10, lr 0.05).

Per chain: uplink bytes per round (sum over the cohort, as encoded, headers included)
and per client upload; ``uplink_ratio`` = dense fp32 bytes / chain bytes over the whole
run (same cohorts, so the same number of uploads); ``downlink_ratio`` likewise for the
model broadcast (dense: every client downloads the fp32 model); final test accuracy
and ``acc_delta_pt`` = 100 x (chain − dense), negative when worse. The full run repeats
every digits configuration with seeds 0, 1, 2 and reports the *median of the per-seed
paired deltas* (``acc_delta_pt``) next to the seed-0 delta (``acc_delta_pt_seed0``);
``--quick`` runs seed 0 only, 30 digits rounds and 60 synthetic rounds, and 4 chains.
The digits test set has 360 examples: one example is 0.28 points.

Server momentum (FedAvgM, ``server.momentum=0.5``) rows are compared both with dense
FedAvg (``acc_delta_pt``) and with dense FedAvgM (``acc_delta_pt_same_server``). The
must-show checks use dense FedAvg and the median delta.

Usage: python bench/compression.py [--quick]

Results (full run, 2-core CPU machine; whole table in docs/compression.md, "Measured").
Dense FedAvg 0.9306 (median; 38,464 B per upload); Δpt = median paired delta:

    chain                           up x    down x   Δpt     Δpt seed 0
    int8                            3.9     1        0.00    0.00
    int2 + EF                       14.8    1        -0.28   -0.28
    topk1_int8_ef                   153     1        -1.39   -4.17
    topk01_int8_ef                  568     1        -9.17   -12.78
    randk1_int8 (stochastic)        269     1        -4.72   -4.72
    randk 3% int8 stochastic        113     1        +0.83   -0.28
    down top-k 10% int4             1       4.36     0.00    -0.28
    up randk 3% + down top-k 10%    113     4.36     +0.83   -0.28

The full run takes about 4 CPU-minutes (78 digits runs of 1-3 s, 10 synthetic runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from fedstrata.api import run
from fedstrata.config import load_config

SEEDS_FULL = (0, 1, 2)
COMMON = (
    "output.run_store=false",
    "output.report=false",
    "output.progress=false",
    "sim.workers=0",  # results are bit-identical for any worker count; spare the cores
)
SYNTHETIC = (
    "data.name=synthetic",
    "data.num_clients=100",
    "model.kind=logreg",
    "rounds.clients_per_round=10",
    "client.epochs=null",
    "client.steps=20",
    "client.batch_size=10",
    "client.lr=0.05",
)
DL_HISTORY = 100  # the server keeps every delta of the run (~1 KB each)


@dataclass(frozen=True)
class Chain:
    """One benchmark row: uplink and downlink compression, and the server optimizer."""

    name: str
    up: dict[str, Any] = field(default_factory=dict)
    down: dict[str, Any] = field(default_factory=dict)
    momentum: float | None = None  # FedAvgM with this momentum; None: FedAvg

    def overrides(self) -> list[str]:
        out = [f"compression.{k}={_yaml(v)}" for k, v in self.up.items()]
        if self.down:
            out += [f"downlink.{k}={_yaml(v)}" for k, v in self.down.items()]
            if "history" not in self.down:
                out.append(f"downlink.history={DL_HISTORY}")
        if self.momentum is not None:
            out += ["server.optimizer=fedavgm", f"server.momentum={self.momentum}"]
        return out


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _topk(density: float, bits: int, ef: bool = True, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"sparsify": "topk", "density": density, "quantize": bits}
    return {**out, "error_feedback": ef, **extra}


def _randk(density: float, bits: int, **extra: Any) -> dict[str, Any]:
    return {"sparsify": "randk", "density": density, "quantize": bits, **extra}


RANDK3 = _randk(0.03, 8, stochastic=True)
DOWN_TOPK10_Q4 = _topk(0.1, 4)

UPLINK = [
    Chain("int8", {"preset": "int8"}),
    Chain("int4_sr", {"preset": "int4_sr"}),
    Chain("int2_ef", {"quantize": 2, "error_feedback": True}),
    Chain("int2_sr", {"quantize": 2, "stochastic": True}),
    Chain("sign_ef", {"preset": "sign_ef"}),
    Chain("topk10_int8_ef", _topk(0.1, 8)),
    Chain("topk1_int8_ef", {"preset": "topk1_int8_ef"}),
    Chain("topk1_int8_ef_zstd", {"preset": "topk1_int8_ef_zstd"}),
    Chain("topk1_int8 (no EF)", _topk(0.01, 8, ef=False)),
    Chain("topk2_int4_sr_ef", _topk(0.02, 4, stochastic=True)),
    Chain("topk01_int8_ef", {"preset": "topk01_int8_ef"}),
    Chain("randk1_int8_sr", {"preset": "randk1_int8"}),
    Chain("randk2_int8_sr", _randk(0.02, 8, stochastic=True)),
    Chain("randk3_int8_sr", RANDK3),
    Chain("randk3_int8_ef", _randk(0.03, 8, error_feedback=True)),
]
DOWNLINK = [
    Chain("down int8 (history 8)", down={"preset": "int8", "history": 8}),
    Chain("down int4_sr", down={"preset": "int4_sr"}),
    Chain("down topk1_int8", down=_topk(0.01, 8)),
    Chain("down topk5_int8", down=_topk(0.05, 8)),
    Chain("down topk10_int4", down=DOWN_TOPK10_Q4),
    Chain("down randk10_int8", down=_randk(0.1, 8)),
    Chain("up randk3_int8_sr + down topk10_int4", RANDK3, DOWN_TOPK10_Q4),
]
MOMENTUM = [
    Chain("topk1_int8_ef + FedAvgM", {"preset": "topk1_int8_ef"}, momentum=0.5),
    Chain("randk3_int8_sr + FedAvgM", RANDK3, momentum=0.5),
]
SYNTH_CHAINS = [
    Chain("int8", {"preset": "int8"}),
    Chain("int4_sr", {"preset": "int4_sr"}),
    Chain("int2_ef", {"quantize": 2, "error_feedback": True}),
    Chain("topk10_int8_ef", _topk(0.1, 8)),
    Chain("topk1_int8_ef", {"preset": "topk1_int8_ef"}),
    Chain("randk10_int8_sr", _randk(0.1, 8, stochastic=True)),
    Chain("randk30_int8_sr", _randk(0.3, 8, stochastic=True)),
    Chain("down int8", down={"preset": "int8"}),
    Chain("down topk10_int4", down=DOWN_TOPK10_Q4),
]
QUICK = {"int8", "topk1_int8_ef", "randk3_int8_sr", "down topk10_int4"}


@dataclass(frozen=True)
class Outcome:
    """Whole-run figures of one configuration and seed."""

    acc: float
    bytes_up: int
    bytes_down: int
    rounds: int
    uploads: int
    num_params: int
    wall_s: float


def simulate(base: tuple[str, ...], extra: list[str], seed: int) -> Outcome:
    """One run through the public API."""
    cfg = load_config(preset="quickstart", overrides=[*COMMON, *base, f"seed={seed}", *extra])
    start = time.perf_counter()
    result = run(cfg)
    sim = result.simulation
    rounds = sim.rounds
    acc = sim.final_accuracy
    if acc is None:
        raise SystemExit("the run reported no accuracy")
    return Outcome(
        acc=acc,
        bytes_up=sum(m.bytes_up for m in rounds),
        bytes_down=sum(m.bytes_down for m in rounds),
        rounds=len(rounds),
        uploads=sum(m.clients_completed for m in rounds),
        num_params=result.num_params,
        wall_s=time.perf_counter() - start,
    )


def row(
    chain: Chain, runs: list[Outcome], dense: list[Outcome], same: list[Outcome]
) -> dict[str, Any]:
    """The JSON object of one chain: ratios vs ``dense`` and paired accuracy deltas."""
    deltas = [100 * (r.acc - d.acc) for r, d in zip(runs, dense, strict=True)]
    same_deltas = [100 * (r.acc - d.acc) for r, d in zip(runs, same, strict=True)]
    first, ref = runs[0], dense[0]
    return {
        "name": chain.name,
        "uplink": chain.up or "fp32",
        "downlink": chain.down or "fp32",
        "server": "fedavgm" if chain.momentum is not None else "fedavg",
        "uplink_bytes_per_round": round(first.bytes_up / first.rounds),
        "uplink_bytes_per_client": round(first.bytes_up / first.uploads, 1),
        "downlink_bytes_per_round": round(first.bytes_down / first.rounds),
        "uplink_ratio": round(ref.bytes_up / first.bytes_up, 2),
        "downlink_ratio": round(ref.bytes_down / first.bytes_down, 2),
        "acc": round(statistics.median(r.acc for r in runs), 4),
        "acc_by_seed": [round(r.acc, 4) for r in runs],
        "acc_delta_pt": round(statistics.median(deltas), 2),
        "acc_delta_pt_seed0": round(deltas[0], 2),
        "acc_delta_pt_by_seed": [round(x, 2) for x in deltas],
        "acc_delta_pt_same_server": round(statistics.median(same_deltas), 2),
    }


def sweep(
    base: tuple[str, ...], chains: list[Chain], seeds: tuple[int, ...]
) -> tuple[list[Outcome], list[Outcome], list[dict[str, Any]]]:
    """Dense FedAvg (and dense FedAvgM when needed), then every chain, on every seed."""
    dense = [simulate(base, [], s) for s in seeds]
    dense_m: list[Outcome] = []
    if any(c.momentum is not None for c in chains):
        dense_m = [simulate(base, Chain("m", momentum=0.5).overrides(), s) for s in seeds]
    rows = []
    for chain in chains:
        runs = [simulate(base, chain.overrides(), s) for s in seeds]
        same = dense_m if chain.momentum is not None else dense
        rows.append(row(chain, runs, dense, same))
        print(f"  {chain.name}: {rows[-1]['acc_by_seed']}", file=sys.stderr, flush=True)
    return dense, dense_m, rows


def must_show(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets on the digits rows: every chain that meets each one.

    Baseline dense fp32 FedAvg (FedAvgM rows excluded); accuracy by the median of the
    paired per-seed deltas.
    """

    def meeting(min_up: float, min_down: float, max_loss_pt: float) -> list[str]:
        hits = [
            r
            for r in rows
            if r["server"] == "fedavg"
            and r["uplink_ratio"] >= min_up
            and r["downlink_ratio"] >= min_down
            and r["acc_delta_pt"] >= -max_loss_pt
        ]
        return [r["name"] for r in sorted(hits, key=lambda r: -r["uplink_ratio"])]

    return {
        "baseline": "dense fp32 FedAvg (FedAvg rows only); median of paired per-seed deltas",
        "uplink_100x_within_1pt": meeting(100, 0, 1.0),
        "uplink_12.5x_within_0.5pt": meeting(12.5, 0, 0.5),
        "downlink_4x_within_0.5pt": meeting(0, 4, 0.5),
    }


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    head = ["chain", "B/round up", "up x", "B/round down", "down x", "acc", "Δpt", "Δpt s0"]
    head.append("Δpt same srv")
    body = [
        [
            r["name"],
            str(r["uplink_bytes_per_round"]),
            f"{r['uplink_ratio']:.1f}",
            str(r["downlink_bytes_per_round"]),
            f"{r['downlink_ratio']:.2f}",
            f"{r['acc']:.4f}",
            f"{r['acc_delta_pt']:+.2f}",
            f"{r['acc_delta_pt_seed0']:+.2f}",
            f"{r['acc_delta_pt_same_server']:+.2f}",
        ]
        for r in rows
    ]
    return [head, *body]


def print_table(title: str, rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def dense_row(name: str, runs: list[Outcome]) -> dict[str, Any]:
    first = runs[0]
    return {
        "name": name,
        "uplink_bytes_per_round": round(first.bytes_up / first.rounds),
        "uplink_ratio": 1.0,
        "downlink_bytes_per_round": round(first.bytes_down / first.rounds),
        "downlink_ratio": 1.0,
        "acc": round(statistics.median(r.acc for r in runs), 4),
        "acc_delta_pt": 0.0,
        "acc_delta_pt_seed0": 0.0,
        "acc_delta_pt_same_server": 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, fewer rounds and chains")
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = (0,) if args.quick else SEEDS_FULL
    digits_rounds = 30 if args.quick else 100
    synth_rounds = 60 if args.quick else 200
    pick = (lambda cs: [c for c in cs if c.name in QUICK]) if args.quick else (lambda cs: cs)
    digits = (f"rounds.rounds={digits_rounds}",)
    chains = pick(UPLINK) + pick(DOWNLINK) + ([] if args.quick else MOMENTUM)
    dense, dense_m, rows = sweep(digits, chains, seeds)
    synth = (*SYNTHETIC, f"rounds.rounds={synth_rounds}")
    s_dense, _, s_rows = sweep(synth, pick(SYNTH_CHAINS), (0,))
    mode = "full"
    if args.quick:
        mode = "QUICK (seed 0, fewer rounds and chains; not the issue's figures)"
    print(f"compression benchmark, {mode}; digits {digits_rounds} rounds, seeds {list(seeds)}")
    extra = [dense_row("dense fp32 FedAvgM", dense_m)] if dense_m else []
    digits_rows = [dense_row("dense fp32 FedAvg", dense), *extra, *rows]
    print_table("digits (quickstart)", table(digits_rows))
    print_table(
        f"synthetic(1,1), logreg, {synth_rounds} rounds, seed 0",
        table([dense_row("dense fp32 FedAvg", s_dense), *s_rows]),
    )
    result = {
        "bench": "compression",
        "quick": args.quick,
        "rounds": digits_rounds,
        "seeds": list(seeds),
        "num_params": dense[0].num_params,
        "dense_acc": round(statistics.median(r.acc for r in dense), 4),
        "dense_acc_by_seed": [round(r.acc, 4) for r in dense],
        "dense_fedavgm_acc": extra[0]["acc"] if extra else None,
        "dense_uplink_bytes_per_round": round(dense[0].bytes_up / dense[0].rounds),
        "chains": rows,
        "must_show": must_show(rows),
        "synthetic": {
            "rounds": synth_rounds,
            "num_params": s_dense[0].num_params,
            "dense_acc": round(s_dense[0].acc, 4),
            "chains": s_rows,
        },
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
