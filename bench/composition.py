"""Composition benchmark (issue 12): which features combine, measured by running them.

Section 1, the pair matrix: every pair of the declared features
(``fedstrata.config.compat.FEATURES``) is switched on together in a tiny federation
(8 synthetic clients, logistic regression, 2 rounds, in-process). A pair is either
refused by the configuration check (with the reason ``docs/compatibility.md`` gives)
or trains, and then both features' declared evidence must be in the run's records
(``fedstrata.api.composition.EVIDENCE``); a pair accepted without it is counted as
silently ignored. ``--quick`` runs the same matrix (it is already small).

Section 2, the all-on federation: 200 clients (digits, IID, MLP 64-128-10; ``--hidden``
sets its width) in 10 edges of 20 under 2 regions, 10% of the clients dropping out each
round, a 4 s deadline with work allocation; the all-on run adds two-tier secure
aggregation, distributed DP (discrete-Gaussian shares in the ring, ε = 2, δ = 1e-5,
staged 30/50/20 budget) and random-k 5% + 8-bit stochastic compression into the ring.
The plain run is the same federation with none of the privacy features and dense
updates. ε is checked against dp-accounting directly; the added wall time is the median
over rounds 2.. of the difference, with both runs in this process, one after the other.

Usage: ``python bench/composition.py [--quick] [--hidden N]``; the human table first,
the last line is one JSON object (``pairs_total``, ``pairs_working``, ``pairs_refused``,
``silently_ignored``, ``allon_acc``, ``plain_acc``, ``allon_eps_spent``,
``allon_uplink_ratio``, ``allon_added_wall_s_per_round``, ``allon_sim_round_s``,
``plain_sim_round_s``, ...).
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


# Section 2: the all-on federation (issue 12): 200 clients in 10 edges of 20 under 2
# regions, 10% dropping out per round, everything at once against the plain federation.
EDGES, PER_EDGE, REGIONS = 10, 20, 2
COMMON = (
    "data.name=digits", "data.partition=iid", f"data.num_clients={EDGES * PER_EDGE}",
    "model.kind=mlp", "client.epochs=1", "client.batch_size=8",
    "client.lr=0.1", "rounds.clients_per_round=null", "evaluation.every=0",
    "devices.dropout_rate=0.1", "rounds.deadline_s=4", "scheduling.allocation=true",
    "scheduling.skip_infeasible=false", "scheduling.max_steps=4", "sim.workers=0",
    "output.run_store=false", "output.report=false", "output.progress=false",
)  # fmt: skip
PRIVATE = (
    "secagg.enabled=true", "secagg.dropout_rate=0.15", "privacy.mechanism=distributed",
    "privacy.epsilon=2", "privacy.delta=1e-5", "privacy.schedule=staged",
    "privacy.clip_norm=0.5", "compression.sparsify=randk", "compression.density=0.05",
    "compression.quantize=8", "compression.stochastic=true",
)  # fmt: skip


def _tree_file(folder: Path) -> Path:
    """The explicit tree: region r -> edge e -> its 20 client ids."""
    lines = ["topology:", "  mode: explicit", "  regions:"]
    per_region = EDGES // REGIONS
    for r in range(REGIONS):
        lines.append(f"    region-{r}:")
        for e in range(r * per_region, (r + 1) * per_region):
            ids = ", ".join(str(c) for c in range(e * PER_EDGE, (e + 1) * PER_EDGE))
            lines.append(f"      edge-{e}: [{ids}]")
    path = folder / "tree.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _federation(tree: Path, rounds: int, private: bool, hidden: int) -> Any:
    from fedstrata.api import run
    from fedstrata.config import load_config

    extra = PRIVATE if private else ()
    sized = [*COMMON, f"model.hidden={hidden}", f"rounds.rounds={rounds}"]
    config = load_config(tree, overrides=[*sized, *extra])
    return config, run(config).simulation


def _independent_epsilon(sigmas: list[float], population: int, cohort: int) -> float:
    """ε of the recorded noise multipliers by dp-accounting directly (fixed-size cohorts,
    replace-one neighbours, RDP), to check the run's accountant."""
    import dp_accounting as dpa
    from dp_accounting.rdp import rdp_privacy_accountant

    accountant = rdp_privacy_accountant.RdpAccountant(
        neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE
    )
    for sigma in sigmas:
        accountant.compose(
            dpa.SampledWithoutReplacementDpEvent(
                population, cohort, dpa.GaussianDpEvent(sigma / 2)
            )
        )
    return float(accountant.get_epsilon(1e-5))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _per_client_ingress(rounds: list[Any]) -> float:
    """Client -> edge bytes per delivered update (keys and shares included)."""
    done = sum(m.clients_completed for m in rounds)
    return sum(m.tiers.edge_ingress_bytes for m in rounds) / max(done, 1)


def all_on(args: argparse.Namespace) -> dict[str, Any]:
    """The all-on federation against the plain one (same tree, dropouts, deadline and
    allocation; no secure aggregation, no DP, dense updates)."""
    rounds = 4 if args.quick else 12
    with tempfile.TemporaryDirectory(prefix="fedstrata-allon-") as folder:
        tree = _tree_file(Path(folder))
        _, plain = _federation(tree, rounds, private=False, hidden=args.hidden)
        config, allon = _federation(tree, rounds, private=True, hidden=args.hidden)
    steady = slice(1, None)  # the first round pays one-off set-up (imports, key caches)
    sigmas = [m.privacy.noise_multiplier for m in allon.rounds]
    n = EDGES * PER_EDGE
    eps = allon.rounds[-1].privacy.epsilon_spent
    check = _independent_epsilon(sigmas, n, n)
    out = {
        "allon_rounds": len(allon.rounds),
        "allon_params": allon.params.size,
        "allon_acc": allon.final_accuracy,
        "plain_acc": plain.final_accuracy,
        "allon_eps_spent": eps,
        "allon_eps_dp_accounting": check,
        "allon_eps_rel_err": abs(eps - check) / check,
        "allon_uplink_ratio": _per_client_ingress(plain.rounds)
        / _per_client_ingress(allon.rounds),
        "allon_added_wall_s_per_round": _median([m.wall_round_s for m in allon.rounds[steady]])
        - _median([m.wall_round_s for m in plain.rounds[steady]]),
        "allon_wall_s_per_round": _median([m.wall_round_s for m in allon.rounds[steady]]),
        "plain_wall_s_per_round": _median([m.wall_round_s for m in plain.rounds[steady]]),
        "allon_sim_round_s": _median([m.sim_round_s for m in allon.rounds]),
        "plain_sim_round_s": _median([m.sim_round_s for m in plain.rounds]),
        "allon_dropped_per_round": _median([float(m.clients_failed) for m in allon.rounds]),
        "allon_withheld_rounds": sum(m.secagg_tree.withheld or 0 for m in allon.rounds),
        "allon_lost_rounds": sum(m.secagg_tree.lost or 0 for m in allon.rounds),
        "allon_survivors_min": min(m.secagg_tree.survivors or 0 for m in allon.rounds),
        "allon_stopped": allon.stopped_reason,
    }
    del config
    print(f"\n{'all-on federation':<30}{'all-on':>12}{'plain':>12}")
    for label, a, b in (
        ("final accuracy", out["allon_acc"], out["plain_acc"]),
        ("sim round s (median)", out["allon_sim_round_s"], out["plain_sim_round_s"]),
        ("wall s / round (median)", out["allon_wall_s_per_round"], out["plain_wall_s_per_round"]),
    ):
        print(f"{label:<30}{a if a is None else round(a, 4)!s:>12}{round(b, 4)!s:>12}")
    print(
        f"epsilon spent {eps:.4f} (dp-accounting {check:.4f}), uplink "
        f"{out['allon_uplink_ratio']:.1f}x below dense, added wall "
        f"{out['allon_added_wall_s_per_round']:.3f} s/round"
    )
    return out


SECTIONS: tuple[Section, ...] = (pair_matrix, all_on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized run")
    parser.add_argument(
        "--hidden", type=int, default=128, help="all-on federation: the MLP's hidden width"
    )
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
