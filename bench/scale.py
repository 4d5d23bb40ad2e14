"""Scale: a 10,000-client population, 1,000 clients per round, a small model.

Synthetic(1, 1) data (FedProx generator) over 10,000 clients (client sizes from the
generator's log-normal law, capped at 64 examples), logistic regression (60 -> 10),
1 local epoch, batch 10. The run happens in a child process
whose whole process tree (main + workers) is sampled for memory every 50 ms.

Usage: python bench/scale.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys


def child(population: int, per_round: int, rounds: int) -> None:
    from fedstrata.api import run
    from fedstrata.config import load_config

    cfg = load_config(
        preset="quickstart",
        overrides=[
            "name=scale",
            "data.name=synthetic",
            f"data.num_clients={population}",
            "data.synthetic_max_samples=64",
            "data.partition=iid",
            "model.kind=logreg",
            "client.epochs=1",
            "client.batch_size=10",
            "client.lr=0.05",
            f"rounds.clients_per_round={per_round}",
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
                "completed": [m.clients_completed for m in sim.rounds],
                "acc": sim.final_accuracy,
                "workers": result.workers,
                "num_params": result.num_params,
            }
        )
    )


def main() -> None:
    from _common import emit, median, run_child

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--per-round", type=int, default=1_000)
    args = parser.parse_args()
    rounds = 2 if args.quick else 4
    run = run_child(
        [__file__, "--child", str(args.population), str(args.per_round), str(rounds)],
        {"OMP_NUM_THREADS": "1"},
    )
    res = run.result
    steady = res["round_s"][1:] or res["round_s"]
    per_round_s = median(steady)
    updates_per_s = median(
        [c / s for c, s in zip(res["completed"][1:] or res["completed"], steady, strict=True)]
    )
    rows = [
        [
            "population",
            "clients/round",
            "rounds",
            "round wall s",
            "updates/s",
            "peak RSS MB",
            "peak PSS MB",
            "whole s",
        ],
        [
            str(args.population),
            str(args.per_round),
            str(rounds),
            f"{per_round_s:.2f}",
            f"{updates_per_s:.0f}",
            f"{run.peak_rss_mb:.0f}",
            f"{run.peak_pss_mb:.0f}",
            f"{run.wall_s:.1f}",
        ],
    ]
    emit(
        rows,
        {
            "bench": "scale",
            "population": args.population,
            "clients_per_round": args.per_round,
            "rounds": rounds,
            "round_wall_s": round(per_round_s, 3),
            "updates_per_s": round(updates_per_s, 1),
            "peak_rss_mb": round(run.peak_rss_mb, 1),
            "peak_pss_mb": round(run.peak_pss_mb, 1),
            "whole_s": round(run.wall_s, 2),
            "final_accuracy": res["acc"],
            "workers": res["workers"],
            "num_params": res["num_params"],
        },
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
