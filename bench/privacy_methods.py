"""Issue 18 part 3: rounds to a fixed target at ε = 2 for the DP methods the literature
says cut rounds (DP-FedAvgM, larger cohorts, adaptive clipping, DP-FTRL), against the
best non-private training, with the staged allocator's figure beside them.

The study itself (federation, arms, target rule) is ``bench/_scen_privacy.py``; this
script prints its table and, as its last line, the JSON. Results and discussion:
docs/privacy.md, "Methods at fixed ε".

Run: ``python bench/privacy_methods.py [--quick] [--seeds N]``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import _scen_privacy


def _table(result: dict[str, Any]) -> list[list[str]]:
    ref = result["dp_nonprivate_reference"]
    base = None if ref is None else result["dp_methods"][ref]["rounds_to_target_median"]
    rows = [["method", "per_round", "rounds_to_target", "x_nonprivate", "final_acc", "eps", "z"]]
    for name, m in result["dp_methods"].items():
        r2t = m["rounds_to_target_median"]
        ratio = "-" if r2t is None or base is None else f"{r2t / base:.2f}"
        eps = "-" if m["eps"] is None else f"{m['eps']:.4f}"
        sigma = "-" if m["noise_multiplier"] is None else f"{m['noise_multiplier']:.3f}"
        rows.append(
            [name, str(m["clients_per_round"]), str(r2t), ratio, str(m["final_acc_median"]),
             eps, sigma]
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, arms and seeds")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm")
    args = parser.parse_args()
    result = _scen_privacy.measure(args.quick, seeds=args.seeds)
    result["quick"] = args.quick
    rows = _table(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(
        f"DP methods at eps={result['dp_epsilon']}, delta={result['dp_delta']}: target "
        f"{result['dp_target_acc']} ({result['dp_rounds_planned']} planned rounds, "
        f"{result['dp_seeds']} seeds, medians)"
    )
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"best: {result['dp_best_method']} at {result['dp_rounds_vs_nonprivate_best']}x "
        f"the rounds of {result['dp_nonprivate_reference']}; staged vs uniform "
        f"{result['dp_staged_rounds_vs_uniform']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
