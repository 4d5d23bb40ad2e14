"""Composition benchmark (issue 12): which features combine, measured by running them.

Section 1, the pair matrix: every pair of the declared features
(``fedstrata.config.compat.FEATURES``) is switched on together in a tiny federation
(8 synthetic clients, logistic regression, 2 rounds, in-process). A pair is either
refused by the configuration check (with the reason ``docs/compatibility.md`` gives)
or trains, and then both features' declared evidence must be in the run's records
(``fedstrata.api.composition.EVIDENCE``); a pair accepted without it is counted as
silently ignored. ``--quick`` runs the same matrix (it is already small).

Further sections (the all-on federation) add their own rows and JSON keys through
``SECTIONS``.

Usage: ``python bench/composition.py [--quick]``; the human table first, the last line
is one JSON object (``pairs_total``, ``pairs_working``, ``pairs_refused``,
``silently_ignored``, ...).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedstrata.api.composition import PairOutcome, run_features
from fedstrata.config.compat_table import pairs

Section = Callable[[argparse.Namespace], dict[str, Any]]


def _verdict(outcome: PairOutcome) -> str:
    if outcome.refused is not None:
        return "refused"
    return f"IGNORED {','.join(outcome.missing)}" if outcome.missing else "works"


def pair_matrix(args: argparse.Namespace) -> dict[str, Any]:
    """Run every pair; count working, refused and silently ignored pairs."""
    del args  # the matrix is the same with --quick
    outcomes: list[PairOutcome] = []
    start = time.perf_counter()
    print(f"{'pair':<34}{'verdict':<24}{'s':>6}")
    for a, b in pairs():
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fedstrata-pair-") as scratch:
            outcome = run_features((a, b), Path(scratch))
        outcomes.append(outcome)
        name = f"{a.key}+{b.key}"
        print(f"{name:<34}{_verdict(outcome):<24}{time.perf_counter() - t0:>6.2f}", flush=True)
    ignored = [o for o in outcomes if o.refused is None and o.missing]
    refused = [o for o in outcomes if o.refused is not None]
    return {
        "pairs_total": len(outcomes),
        "pairs_working": len(outcomes) - len(refused) - len(ignored),
        "pairs_refused": len(refused),
        "silently_ignored": len(ignored),
        "silently_ignored_pairs": ["+".join(o.features) for o in ignored],
        "pairs_wall_s": time.perf_counter() - start,
    }


SECTIONS: tuple[Section, ...] = (pair_matrix,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized run")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # per-round warnings (late clients) would drown the table
    warnings.simplefilter("ignore")
    summary: dict[str, Any] = {}
    for section in SECTIONS:
        summary.update(section(args))
    print(
        f"\npairs: {summary['pairs_total']} total, {summary['pairs_working']} working, "
        f"{summary['pairs_refused']} refused, {summary['silently_ignored']} silently ignored"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
