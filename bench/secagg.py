"""Secure-aggregation cost: the whole protocol for a simulated cohort in one process.

Every client's and the server's state machine runs in this process
(:func:`fedstrata.secagg.simulate_round_detailed`); each party's compute is timed
separately and summed. Inputs are 100,000-element uint32 vectors (8 distinct
random vectors cycled over the cohort to save memory; the protocol work is the
same). Dropped clients vanish after sharing keys, the costly case: their masks
are recovered by the server. Graph parameters come from
``derive_parameters(n, dropout)`` (sparse) or ``n - 1`` neighbours (full).

Columns: per-client compute (mean), server compute, total (all parties), the
online part (masked input + summing + unmasking; what the mask pool shrinks),
and bytes per surviving client (sent + received) over the plaintext 4 * m bytes.

Run: ``python bench/secagg.py [--quick]``; the last stdout line is JSON.

Results (2-core shared CPU, full run; the whole table is in docs/secagg.md):
n=1000, 10% dropout, sparse graph (k=38, t=20): total 5.3 s, online 2.9 s
without the pool, 0.38 s with it; bytes per client 1.03x plaintext; full graph 162 s, 1.88x.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np

from fedstrata.secagg import SecAggConfig, simulate_round_detailed

M = 100_000


@dataclass(frozen=True)
class Case:
    n: int
    dropout: float
    sparse: bool
    pool: bool

    @property
    def key(self) -> str:
        graph = "sparse" if self.sparse else "full"
        pool = "pool" if self.pool else "nopool"
        return f"n{self.n}_drop{round(self.dropout * 100)}_{graph}_{pool}"


def _cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case(100, 0.1, True, False),
            Case(100, 0.1, False, False),
            Case(100, 0.1, True, True),
            Case(500, 0.1, True, False),
            Case(1000, 0.1, True, False),
            Case(1000, 0.1, True, True),
        ]
    out = [
        Case(n, d, True, p)
        for n in (100, 500, 1000)
        for d in (0.0, 0.1, 0.3)
        for p in (False, True)
    ]
    out += [Case(n, d, False, False) for n in (100, 500) for d in (0.0, 0.1, 0.3)]
    out += [Case(100, 0.1, False, True), Case(1000, 0.1, False, False)]
    return out


def _run(case: Case, rng: np.random.Generator) -> dict[str, float]:
    config = SecAggConfig.for_cohort(
        case.n, M, case.dropout, sparse=case.sparse, precompute_masks=case.pool
    )
    pool = [rng.integers(0, 1 << 16, M, dtype=np.uint32) for _ in range(8)]
    inputs = [pool[i % 8] for i in range(case.n)]
    dropped = set(rng.choice(case.n, round(case.dropout * case.n), replace=False).tolist())
    start = time.perf_counter()
    result = simulate_round_detailed(inputs, dropped, config, rng)
    wall = time.perf_counter() - start
    expect = np.zeros(M, np.uint32)
    for i in set(range(case.n)) - dropped:
        expect += inputs[i]
    s = result.stats
    alive = np.array(sorted(result.survivors))
    per_client = (s.bytes_up[alive] + s.bytes_down[alive]).mean()
    client = s.client_offline_s + s.client_online_s
    return {
        "degree": config.degree,
        "threshold": config.threshold,
        "client_s_mean": float(client.mean()),
        "client_s_max": float(client.max()),
        "server_s": s.server_offline_s + s.server_online_s,
        "total_s": s.total_s,
        "online_s": s.online_s,
        "bytes_per_client": float(per_client),
        "bandwidth_expansion": float(per_client / (4 * M)),
        "uplink_expansion": float(s.bytes_up[alive].mean() / (4 * M)),
        "wall_s": wall,
        "exact": float(np.array_equal(result.aggregate, expect)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configs (< 60 s)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}
    header = (
        f"{'config':<28}{'k':>5}{'t':>5}{'client ms':>11}{'server s':>10}"
        f"{'total s':>9}{'online s':>10}{'bytes x':>9}{'exact':>7}"
    )
    print(header)
    for case in _cases(args.quick):
        r = _run(case, rng)
        results[case.key] = r
        print(
            f"{case.key:<28}{r['degree']:>5.0f}{r['threshold']:>5.0f}"
            f"{r['client_s_mean'] * 1e3:>11.2f}{r['server_s']:>10.2f}{r['total_s']:>9.2f}"
            f"{r['online_s']:>10.2f}{r['bandwidth_expansion']:>9.3f}{r['exact']:>7.0f}",
            flush=True,
        )
    default = results["n1000_drop10_sparse_nopool"]
    pooled = results["n1000_drop10_sparse_pool"]
    summary: dict[str, object] = {
        "n1000_drop10_total_s": default["total_s"],
        "bandwidth_expansion_n1000": default["bandwidth_expansion"],
        "n1000_drop10_online_s": default["online_s"],
        "n1000_drop10_pool_online_s": pooled["online_s"],
        "pool_online_saving": 1.0 - pooled["online_s"] / default["online_s"],
        "all_exact": all(r["exact"] == 1.0 for r in results.values()),
        "configs": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
