"""Framework overhead on workload W1 (../shared/BASELINES.md): fedstrata vs the floor.

W1: scikit-learn digits (features / 16), stratified 80/20 split (random_state 0), the
train set sorted by label and cut into 200 shards, 2 shards per client, 100 clients,
all of them every round, 10 rounds, MLP 64-128-10, 1 local epoch, batch 8, SGD lr
0.05, FedAvg weighted by sample count, centralized evaluation after every round.

The *floor* is the same work as a plain Python loop in one process, as the peers'
floor was measured: ``torch.manual_seed(0)`` before building the model, one model,
``torch.optim.SGD`` per client, shuffling with a ``torch.Generator`` seeded
``100003 * round + client_id``, NumPy averaging. fedstrata runs the ``w1`` preset,
which asks for the same initial weights (``model.init_seed: 0``) and shuffling
(``client.shuffle: round_client``). The floor averages exactly as fedstrata's
aggregator does (float64 sum of n_i * delta_i, divided by the total, cast to float32,
added to the float32 model), so per-round accuracies must match exactly. Both runs
start as fresh processes and are timed whole (interpreter start, imports, set-up).

Usage: python bench/overhead.py [--quick] [--repeats N]

Results (2-core machine; see the issue notes for the latest run):
    ratio_vs_floor      fedstrata whole process / floor whole process
    steady_round_ratio  median over rounds 2-10 of fedstrata round / floor round
"""

from __future__ import annotations

import argparse
import json
import sys
import time

T_START = time.perf_counter()


def floor_main(rounds: int) -> None:
    """The raw-compute floor: W1 in a plain loop, one process, one torch thread."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(1)

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    shards = np.array_split(np.argsort(ytr, kind="stable"), 200)
    perm = np.random.default_rng(0).permutation(200)
    clients = [np.concatenate([shards[perm[2 * c]], shards[perm[2 * c + 1]]]) for c in range(100)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    params = list(model.parameters())
    flat = np.concatenate([p.detach().numpy().ravel() for p in params]).astype(np.float32)
    xte_t, yte_t = torch.from_numpy(xte), torch.from_numpy(yte.astype(np.int64))
    loss_fn = torch.nn.functional.cross_entropy
    round_s, accs = [], []
    for rnd in range(rounds):
        t0 = time.perf_counter()
        acc64 = np.zeros(flat.size, dtype=np.float64)
        total = 0.0
        for c, idx in enumerate(clients):
            with torch.no_grad():
                off = 0
                for p in params:
                    p.copy_(torch.from_numpy(flat[off : off + p.numel()]).view_as(p))
                    off += p.numel()
            xc = torch.from_numpy(xtr[idx])
            yc = torch.from_numpy(ytr[idx].astype(np.int64))
            g = torch.Generator().manual_seed(100003 * rnd + c)
            order = torch.randperm(len(idx), generator=g)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            for b in range(0, len(idx), 8):
                sel = order[b : b + 8]
                opt.zero_grad()
                loss_fn(model(xc[sel]), yc[sel]).backward()
                opt.step()
            new = np.concatenate([p.detach().numpy().ravel() for p in params])
            delta = new - flat
            acc64 += float(len(idx)) * delta.astype(np.float64)
            total += float(len(idx))
        flat = flat + (acc64 / total).astype(np.float32)
        with torch.no_grad():
            off = 0
            for p in params:
                p.copy_(torch.from_numpy(flat[off : off + p.numel()]).view_as(p))
                off += p.numel()
            accs.append(int((model(xte_t).argmax(1) == yte_t).sum()) / len(yte))
        round_s.append(time.perf_counter() - t0)
    print(json.dumps({"round_s": round_s, "accs": accs}))


def fedstrata_main(rounds: int) -> None:
    """W1 through fedstrata's public API (preset ``w1``, run store on, no report)."""
    from fedstrata.api import run
    from fedstrata.config import load_config

    cfg = load_config(
        preset="w1",
        overrides=[
            f"rounds.rounds={rounds}",
            "output.report=false",
            "output.progress=false",
            "output.dir=/tmp/fedstrata-bench-runs",
        ],
    )
    result = run(cfg)
    sim = result.simulation
    print(
        json.dumps(
            {
                "round_s": [m.wall_round_s for m in sim.rounds],
                "accs": [m.accuracy for m in sim.rounds],
                "workers": result.workers,
            }
        )
    )


def main() -> None:
    from _common import emit, median, run_child

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 1 minute)")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    rounds = 10
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    me = __file__
    fed_runs, floor_runs = [], []
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits both
        floor_runs.append(run_child([me, "--role", "floor", "--rounds", str(rounds)], env))
        fed_runs.append(run_child([me, "--role", "fedstrata", "--rounds", str(rounds)], env))
    fed_s = median([r.wall_s for r in fed_runs])
    floor_s = median([r.wall_s for r in floor_runs])
    steady = []
    for fr, fl in zip(fed_runs, floor_runs, strict=True):
        steady.append(median(fr.result["round_s"][1:]) / median(fl.result["round_s"][1:]))
    acc_fed = fed_runs[0].result["accs"]
    acc_floor = floor_runs[0].result["accs"]
    rows = [["run", "whole s", "steady round ms", "peak PSS MB", "final acc"]]
    for name, runs in (("floor", floor_runs), ("fedstrata", fed_runs)):
        rows.append(
            [
                name,
                f"{median([r.wall_s for r in runs]):.2f}",
                f"{1e3 * median([median(r.result['round_s'][1:]) for r in runs]):.1f}",
                f"{median([r.peak_pss_mb for r in runs]):.0f}",
                f"{runs[0].result['accs'][-1]:.4f}",
            ]
        )
    emit(
        rows,
        {
            "bench": "overhead",
            "fedstrata_s": round(fed_s, 3),
            "floor_s": round(floor_s, 3),
            "ratio_vs_floor": round(fed_s / floor_s, 3),
            "steady_round_ratio": round(median(steady), 3),
            "acc_fedstrata": acc_fed[-1],
            "acc_floor": acc_floor[-1],
            "acc_equal_every_round": acc_fed == acc_floor,
            "peak_pss_mb_fedstrata": round(median([r.peak_pss_mb for r in fed_runs]), 1),
            "peak_pss_mb_floor": round(median([r.peak_pss_mb for r in floor_runs]), 1),
            "workers": fed_runs[0].result["workers"],
            "repeats": repeats,
        },
    )


if __name__ == "__main__":
    if "--role" in sys.argv:
        p = argparse.ArgumentParser()
        p.add_argument("--role", choices=["floor", "fedstrata"])
        p.add_argument("--rounds", type=int, default=10)
        a = p.parse_args()
        (floor_main if a.role == "floor" else fedstrata_main)(a.rounds)
    else:
        main()
