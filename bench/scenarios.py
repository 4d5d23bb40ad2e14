"""Issue 18: the published enterprise cases, each preset's baseline and fedstrata arm.

For every scenario in :mod:`fedstrata.scenarios` (presets
``src/fedstrata/config/presets/<name>.yaml``; their comments state the scaling from the
published size to one machine) both arms run side by side in this process through
``fedstrata.api.run``; the figure each case published is printed beside the
baseline's and fedstrata's measured one. The baseline is the strongest realistic one
named per scenario (deadline + 1.3x over-selection for heterogeneity, flat FedAvg with
the same compression and sampling for hierarchy, SecAgg+ as Flower runs it, ...).

Then the studies of the other helpers (contracts in the session's CONTRACTS.md), each
``measure(quick)`` from a sibling module: ``_scen_privacy`` (DP methods' rounds to
target at epsilon 2 against non-private training), ``_scen_het`` (allocation's
time-to-accuracy against the best realistic baseline, >= 3 seeds) and ``_scen_hier``
(center-rounds reduction, non-IID, >= 5 seeds). Their top-level keys are copied into
the JSON line.

``--quick``: 1 round per arm (4 for automotive), smaller cohorts for secagg-1000, no
worker processes. Figures that need a target accuracy (privacy-staged,
automotive-roadmap) are None in quick mode, with a note. Full mode runs each preset's
own rounds (minutes on 2 cores).

Usage: python bench/scenarios.py [--quick] [--only NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit
from fedstrata.scenarios import SCENARIOS, run_scenario

_STUDIES = {  # module -> the keys bench/scenarios.py promises at the top level
    "_scen_privacy": ("dp_rounds_vs_nonprivate_best", "dp_best_method"),
    "_scen_het": ("het_alloc_vs_best_baseline_tta",),
    "_scen_hier": ("hier_center_rounds_reduction_median",),
}


def _study(module: str, quick: bool) -> dict[str, Any]:
    """A sibling study's figures, or a note saying why there are none."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        note = f"bench/{module}.py is not on this branch yet ({exc})"
        print(f"warning: {note}", file=sys.stderr)
        return {f"{module}_note": note, **dict.fromkeys(_STUDIES[module])}
    start = time.perf_counter()
    figures: dict[str, Any] = mod.measure(quick)
    missing = [k for k in _STUDIES[module] if k not in figures]
    if missing:
        raise SystemExit(f"bench/{module}.py measure() lacks {missing} (see CONTRACTS.md)")
    return {**figures, f"{module}_wall_s": time.perf_counter() - start}


def _fmt(value: object) -> str:
    return "—" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run")
    parser.add_argument("--no-studies", action="store_true", help="skip the study modules")
    parser.add_argument("--out", type=Path, default=None, help="keep the reports here")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # each arm's dropped-client warnings
    names = args.only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")
    start = time.perf_counter()
    rows = [["scenario", "unit", "published before", "published after", "baseline",
             "fedstrata", "ratio", "published ratio", "wall s"]]  # fmt: skip
    scenarios: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedstrata-scenarios-") as tmp:
        out = args.out or Path(tmp)
        for name in names:
            c = run_scenario(SCENARIOS[name], out / name, quick=args.quick).to_json()
            scenarios[name] = c
            s = SCENARIOS[name]
            rows.append([name, s.unit, _fmt(s.published_before), _fmt(s.published_after),
                         _fmt(c["baseline"]), _fmt(c["measured"]), _fmt(c["ratio"]),
                         _fmt(c["published_ratio"]), _fmt(c["wall_s"])])  # fmt: skip
            print(f"{name}: done in {c['wall_s']:.1f} s", file=sys.stderr, flush=True)
    studies: dict[str, Any] = {}
    if not args.no_studies:
        for module in _STUDIES:
            studies.update(_study(module, args.quick))
    result = {
        "quick": args.quick,
        "scenarios": scenarios,
        **studies,
        "wall_s": time.perf_counter() - start,
    }
    emit(rows, result)


if __name__ == "__main__":
    main()
