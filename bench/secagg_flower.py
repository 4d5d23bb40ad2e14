"""Secure aggregation's cost on W4, fedstrata and Flower 1.42's SecAgg+ side by side.

Workload W4 (``../shared/BASELINES.md``): W1's data, model and training (MLP 64-128-10,
digits in 2 label shards per client, 1 local epoch, every client every round, FedAvg
weighted by examples), with and without secure aggregation; the figure is the seconds
secure aggregation adds to a round (steady rounds, secure minus plain). Both sides run
in this one invocation, one after the other, on the same machine moment:

* **fedstrata** (this process, built like ``fedstrata.api.run``, as
  ``bench/secagg_w1.py`` does): a plain run and a secure run (``secagg.enabled``, no
  dropouts planned: degree and threshold from ``derive_parameters``, reported) of
  ``1 + pairs`` rounds each; the steady round is the median of rounds 2 onwards.
* **Flower** (``bench/peers/flower_secagg_w4.py``, run by ``--flower-python``: a Python
  with ``flwr[simulation]==1.42.*``, torch and scikit-learn; Flower is never one of
  fedstrata's dependencies): one simulation (Ray backend, 2 actors of 1 CPU) whose round
  1 is plain and warms the actors up, then ``pairs`` plain and ``pairs`` SecAgg+ rounds
  (``secaggplus_mod``, 11 shares, threshold 6, no dropouts) in alternating order; the
  steady round of each kind is the median of its rounds.

``--quick`` runs 20 clients and 2 pairs on both sides (W4 proper: 100 clients, 3
pairs). Without a Flower Python (``--flower-python`` or ``$FLOWER_PYTHON``, checked by
importing ``flwr``) only fedstrata is measured: the Flower keys are null and
``flower_note`` says why.

Keys of the JSON line: ``clients``, ``pairs``; ``fedstrata_plain_round_s``,
``fedstrata_secagg_round_s``, ``fedstrata_added_s_per_round``, ``fedstrata_degree``,
``fedstrata_threshold``; ``flower_version``, ``flower_shares``, ``flower_threshold``,
``flower_plain_round_s``, ``flower_secagg_round_s``, ``flower_added_s_per_round``,
``flower_warmup_round_s``, ``flower_wall_s``; ``flower_added_over_fedstrata_added``
(the ratio of the two added times, both measured in this run); ``flower_note``.

Usage: python bench/secagg_flower.py [--quick] [--flower-python PATH]

Results (2-core shared CPU): see docs/secagg.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from _common import emit, median
from secagg_w1 import World, steady

PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "flower_secagg_w4.py"
FLOWER_SHARES, FLOWER_THRESHOLD = 11, 6  # W4's SecAgg+ parameters


def measure_fedstrata(clients: int, pairs: int) -> dict[str, Any]:
    """fedstrata's plain and secure rounds on W4 (this process)."""
    world = World(num_clients=clients, rounds=1 + pairs)
    plain = world.run(None, None)
    pipeline, agg = world.secagg(0.0)
    secure = world.run(pipeline, agg)
    plain_s, secure_s = steady(plain.round_s), steady(secure.round_s)
    return {
        "fedstrata_plain_round_s": round(plain_s, 4),
        "fedstrata_secagg_round_s": round(secure_s, 4),
        "fedstrata_added_s_per_round": round(secure_s - plain_s, 4),
        "fedstrata_degree": agg.config.degree,
        "fedstrata_threshold": agg.config.threshold,
        "fedstrata_acc_plain": plain.accs[-1],
        "fedstrata_acc_secagg": secure.accs[-1],
    }


def flower_python(given: str | None) -> tuple[str | None, str]:
    """The Python to run Flower with, and its ``flwr`` version (or why there is none)."""
    path = given or os.environ.get("FLOWER_PYTHON")
    if not path:
        return None, "Flower not measured: no --flower-python given (nor $FLOWER_PYTHON)"
    try:
        out = subprocess.run(
            [path, "-c", "import flwr; print(flwr.__version__)"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"Flower not measured: {path} does not run ({exc})"
    if out.returncode != 0:
        return None, f"Flower not measured: {path} cannot import flwr"
    return path, out.stdout.strip()


def measure_flower(python: str, clients: int, pairs: int, timeout_s: float) -> dict[str, Any]:
    """Flower's plain and SecAgg+ rounds on W4 (the peer script in its own Python)."""
    argv = [python, str(PEER_SCRIPT), "--clients", str(clients), "--pairs", str(pairs),
            "--shares", str(FLOWER_SHARES), "--threshold", str(FLOWER_THRESHOLD)]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"flower_note": f"Flower did not finish within {timeout_s:g} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-3:]
        return {"flower_note": f"Flower run failed (exit {out.returncode}): {tail}"}
    got = json.loads(lines[-1])
    rounds = got["rounds"]
    halted = [i + 1 for i, r in enumerate(rounds) if r["mode"] == "secagg" and not r["changed"]]
    if halted:
        return {"flower_note": f"Flower's SecAgg+ halted in rounds {halted} (model unchanged)"}
    kind = {m: median([r["s"] for r in rounds if r["mode"] == m]) for m in ("plain", "secagg")}
    return {
        "flower_version": got["flower_version"],
        "flower_plain_round_s": round(kind["plain"], 4),
        "flower_secagg_round_s": round(kind["secagg"], 4),
        "flower_added_s_per_round": round(kind["secagg"] - kind["plain"], 4),
        "flower_warmup_round_s": round(rounds[0]["s"], 2),
        "flower_wall_s": round(got["wall_s"], 1),
        "flower_acc_last": rounds[-1]["accuracy"],
    }


FLOWER_KEYS = (
    "flower_version", "flower_plain_round_s", "flower_secagg_round_s",
    "flower_added_s_per_round", "flower_warmup_round_s", "flower_wall_s", "flower_acc_last",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 clients, 2 pairs (both sides)")
    parser.add_argument("--flower-python", default=None, help="a Python with flwr 1.42")
    parser.add_argument("--flower-timeout", type=float, default=1800.0)
    args = parser.parse_args()
    clients, pairs = (20, 2) if args.quick else (100, 3)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"bench": "secagg_flower", "clients": clients, "pairs": pairs}
    result.update(measure_fedstrata(clients, pairs))
    result.update(dict.fromkeys(FLOWER_KEYS))
    result.update(flower_shares=FLOWER_SHARES, flower_threshold=FLOWER_THRESHOLD)
    python, found = flower_python(args.flower_python)
    result["flower_note"] = found if python is None else None
    if python is not None:
        print(f"measuring Flower {found} with {python} ...", file=sys.stderr, flush=True)
        result.update(measure_flower(python, clients, pairs, args.flower_timeout))
    mine, theirs = result["fedstrata_added_s_per_round"], result["flower_added_s_per_round"]
    ratio = None if theirs is None or mine <= 0 else round(theirs / mine, 1)
    result["flower_added_over_fedstrata_added"] = ratio
    result["bench_s"] = round(time.perf_counter() - t0, 1)
    emit(_table(result), result)


def _table(r: dict[str, Any]) -> list[list[str]]:
    def fmt(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [["side", "plain round s", "secure round s", "added s / round", "secure agg."]]
    rows.append([
        "fedstrata", fmt(r["fedstrata_plain_round_s"]), fmt(r["fedstrata_secagg_round_s"]),
        fmt(r["fedstrata_added_s_per_round"]),
        f"SecAgg+ k={r['fedstrata_degree']} t={r['fedstrata_threshold']}",
    ])  # fmt: skip
    rows.append([
        f"Flower {r['flower_version'] or '(not measured)'}", fmt(r["flower_plain_round_s"]),
        fmt(r["flower_secagg_round_s"]), fmt(r["flower_added_s_per_round"]),
        f"SecAgg+ shares={r['flower_shares']} t={r['flower_threshold']}",
    ])  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
