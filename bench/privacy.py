"""Central DP end to end: staged budget schedules versus a uniform one at the same (ε, δ).

Federation: scikit-learn digits, 1,000 clients (Dirichlet label skew, alpha 0.5, about
1.4 examples each), multinomial logistic regression (650 parameters), 100 clients
sampled per round (Poisson sampling, q = 0.1), 5 local epochs, batch 8, SGD lr 0.05,
FedAvg with server lr 1. Central DP (``privacy.mechanism=central``): every update
clipped to L2 norm 1, uniform weighting, Gaussian noise on the sum, divided by
``q N = 100``; budget ε = 2.0 at δ = 1e-5 planned over all the rounds (PLD accountant).
Everything runs through ``fedstrata.api.run`` with ``output.run_store=false`` and
``sim.workers=0``; the run seed (sampling, noise, initial weights, shuffling) varies
over seeds, the federation (``data.seed``) does not.

Schedules (budget weights on the zCDP scale over equal thirds of the rounds; a larger
weight means less noise in that stage; see docs/privacy.md):

=================  ===============  ==============================================
name               weights          meaning
=================  ===============  ==============================================
uniform            (1.0)            one stage, the same noise every round
staged             0.3 / 0.5 / 0.2  fedstrata's default: least noise mid-run
decreasing_noise   0.2 / 0.3 / 0.5  noise falls over the run
increasing_noise   0.5 / 0.3 / 0.2  noise rises over the run
staged_plateau     0.3 / 0.5 / 0.2  staged, stages also end on a loss plateau
                                    (window 5, relative tolerance 1 %)
uniform_half_plan  (1.0)            uniform, budget planned over half the rounds:
                                    less noise per round, stops at mid-run
=================  ===============  ==============================================

All schedules are given the same rounds (``rounds.rounds``) and, except the last, plan
the budget over all of them (``privacy.planned_rounds``).

Target accuracy, fixed before any staged run was looked at: **95 % of the uniform
schedule's final accuracy** (median over seeds), where a run's final accuracy is its
mean test accuracy over the last 5 rounds (the test set has 360 examples, so single
rounds are noisy). Rounds to target: the first round count after which the test
accuracy is at or above the target; a run that never gets there counts as infinite
(``null`` in the JSON when the median is). Figures are medians over the seeds.

ε checks: ``eps_spent`` is fedstrata's reported ε after the last round (from
``RoundMetrics.privacy``); ``eps_reference`` is an independent dp-accounting
computation — a ``PoissonSampledDpEvent(q, GaussianDpEvent(σ_r))`` per round run,
built here from each round's reported noise multiplier, composed by dp-accounting's
PLD accountant at its finer 1e-4 discretisation — and ``eps_rel_error`` is the largest
relative gap over all private runs. ``eps_budget_ok`` says every run's reported and
reference ε stayed at or below the budget.

Run: ``python bench/privacy.py [--quick] [--seeds N]``; the last stdout line is JSON.
``--quick`` plans 30 rounds instead of 100 over 2 seeds instead of 5 and skips
``staged_plateau`` (the same federation), so its figures are not comparable with the
full run's.

Results (2-core shared CPU, full run, 197 s; discussion in docs/privacy.md, "Measured"):

=================  ================  =========  =========  ======================
schedule           rounds_to_target  final_acc  eps_spent  sigma_by_stage
=================  ================  =========  =========  ======================
nonprivate         21                0.9006     -          -
uniform            51                0.8617     2.0000     2.248
staged             52                0.8478     1.9999     2.440/1.862/2.944
decreasing_noise   63                0.8606     1.9999     2.990/2.405/1.863
increasing_noise   51                0.8494     1.9999     1.886/2.399/2.938
staged_plateau     52                0.8478     1.9999     2.440/1.862/2.944
uniform_half_plan  37                0.8067     1.9998     1.750
=================  ================  =========  =========  ======================

target 0.8186; rounds_reduction (staged vs uniform) -0.02; eps_rel_error 3.4e-5.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting as dpa
from dp_accounting.pld import pld_privacy_accountant

from fedstrata.api import run
from fedstrata.config import load_config

EPSILON = 2.0
DELTA = 1e-5
NUM_CLIENTS = 1000
PER_ROUND = 100
Q = PER_ROUND / NUM_CLIENTS
TARGET_FRACTION = 0.95  # of the uniform schedule's final accuracy (fixed in advance)
FINAL_WINDOW = 5  # rounds averaged into a run's final accuracy
REFERENCE_DISCRETIZATION = 1e-4
QUICK = "30 rounds, 2 seeds, no staged_plateau"

BASE = (
    "data.name=digits",
    "data.partition=dirichlet",
    "data.dirichlet_alpha=0.5",
    f"data.num_clients={NUM_CLIENTS}",
    "data.seed=0",
    "model.kind=logreg",
    "client.epochs=5",
    "client.batch_size=8",
    "client.lr=0.05",
    "server.optimizer=fedavg",
    "server.lr=1.0",
    "privacy.clip_norm=1.0",
    f"rounds.clients_per_round={PER_ROUND}",
    "sim.workers=0",
    "output.run_store=false",
    "output.progress=false",
)

SCHEDULES: dict[str, tuple[str, ...]] = {
    "uniform": ("privacy.schedule=uniform",),
    "staged": ("privacy.schedule=staged", "privacy.stage_weights=[0.3,0.5,0.2]"),
    "decreasing_noise": ("privacy.schedule=staged", "privacy.stage_weights=[0.2,0.3,0.5]"),
    "increasing_noise": ("privacy.schedule=staged", "privacy.stage_weights=[0.5,0.3,0.2]"),
    "staged_plateau": (
        "privacy.schedule=staged",
        "privacy.stage_weights=[0.3,0.5,0.2]",
        "privacy.switch_on_plateau=true",
        "privacy.plateau_window=5",
        "privacy.plateau_tol=0.01",
    ),
    "uniform_half_plan": ("privacy.schedule=uniform", "privacy.planned_rounds={half}"),
}


@dataclass(frozen=True)
class Outcome:
    """One run: per-round accuracy, reported ε and σ, and the stop reason."""

    accuracies: tuple[float, ...]
    epsilons: tuple[float, ...]
    sigmas: tuple[float, ...]
    stopped: bool
    wall_s: float

    @property
    def final_accuracy(self) -> float:
        return statistics.fmean(self.accuracies[-FINAL_WINDOW:])


def _privacy(m: Any, name: str) -> float:
    """A field of the round's PrivacySpent record (NaN when the round has none)."""
    return math.nan if m.privacy is None else float(getattr(m.privacy, name))


def run_once(rounds: int, seed: int, schedule: str | None) -> Outcome:
    """Run the federation once; ``schedule=None`` is the non-private reference."""
    sets = [*BASE, f"seed={seed}", f"rounds.rounds={rounds}"]
    if schedule is not None:
        sets += [
            "privacy.mechanism=central",
            f"privacy.epsilon={EPSILON}",
            f"privacy.delta={DELTA}",
            "privacy.clip_norm=1.0",
            f"privacy.planned_rounds={rounds}",
            "privacy.accountant=pld",
            *(text.format(half=rounds // 2) for text in SCHEDULES[schedule]),
        ]
    start = time.perf_counter()
    result = run(load_config(overrides=sets)).simulation
    metrics = result.rounds
    return Outcome(
        accuracies=tuple(float(m.accuracy or 0.0) for m in metrics),
        epsilons=tuple(
            math.nan if m.privacy is None else m.privacy.epsilon_spent for m in metrics
        ),
        sigmas=tuple(
            math.nan if m.privacy is None else m.privacy.noise_multiplier for m in metrics
        ),
        stopped=result.stopped_reason is not None,
        wall_s=time.perf_counter() - start,
    )


def reference_epsilon(sigmas: Sequence[float], sampling_rate: float, delta: float) -> float:
    """ε of the rounds run, composed by dp-accounting directly (not fedstrata's accountant)."""
    accountant = pld_privacy_accountant.PLDAccountant(
        value_discretization_interval=REFERENCE_DISCRETIZATION
    )
    for sigma, count in sorted(Counter(sigmas).items()):  # composition commutes
        event = dpa.PoissonSampledDpEvent(sampling_rate, dpa.GaussianDpEvent(sigma))
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def rounds_to_target(accuracies: Sequence[float], target: float) -> float:
    """Rounds run until the test accuracy first reaches ``target`` (inf if never)."""
    for i, acc in enumerate(accuracies):
        if acc >= target:
            return float(i + 1)
    return math.inf


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _run_all(rounds: int, seeds: int, names: Sequence[str]) -> dict[str, list[Outcome]]:
    """Every schedule in ``names`` (and the non-private reference) over the seeds."""
    out: dict[str, list[Outcome]] = {}
    for name in ("nonprivate", *names):
        schedule = None if name == "nonprivate" else name
        out[name] = [run_once(rounds, seed, schedule) for seed in range(seeds)]
        print(f"  ran {name} x{seeds} ({sum(o.wall_s for o in out[name]):.1f} s)", flush=True)
    return out


def _privacy_checks(runs: dict[str, list[Outcome]]) -> dict[str, float | bool]:
    """ε reported vs the independent dp-accounting figure, over every private run."""
    errors, spent, refs, ok, monotone = [], [], [], True, True
    for name, outcomes in runs.items():
        for outcome in outcomes if name != "nonprivate" else ():
            eps, ref = outcome.epsilons[-1], reference_epsilon(outcome.sigmas, Q, DELTA)
            errors.append(abs(eps - ref) / ref)
            spent.append(eps)
            refs.append(ref)
            ok = ok and max(outcome.epsilons) <= EPSILON and ref <= EPSILON
            monotone = monotone and all(a <= b for a, b in itertools.pairwise(outcome.epsilons))
    staged = runs["staged"][0]
    return {
        "eps_spent": staged.epsilons[-1],
        "eps_reference": reference_epsilon(staged.sigmas, Q, DELTA),
        "eps_rel_error": max(errors),
        "eps_spent_max": max(spent),
        "eps_reference_max": max(refs),
        "eps_budget_ok": ok,
        "eps_monotone": monotone,
    }


def _header(quick: bool, rounds: int, seeds: int) -> dict[str, object]:
    mode = f"QUICK ({QUICK}; not comparable with the full run)" if quick else "full"
    print(
        f"privacy benchmark, {mode}: {NUM_CLIENTS} clients, {PER_ROUND}/round, "
        f"eps={EPSILON}, delta={DELTA}, {rounds} rounds, {seeds} seeds"
    )
    return {
        "quick": quick,
        "rounds_planned": rounds,
        "seeds": seeds,
        "num_clients": NUM_CLIENTS,
        "clients_per_round": PER_ROUND,
        "epsilon": EPSILON,
        "delta": DELTA,
        "target_rule": f"{TARGET_FRACTION} x median uniform final accuracy "
        f"(final = mean of last {FINAL_WINDOW} rounds)",
    }


def _row(
    name: str, outcomes: Sequence[Outcome], target: float, result: dict[str, object]
) -> list[str]:
    """Record one schedule's figures in ``result``; returns its table row."""
    per_seed = [rounds_to_target(o.accuracies, target) for o in outcomes]
    r2t = _finite_or_none(median(per_seed))
    final = median([o.final_accuracy for o in outcomes])
    result[f"rounds_{name}"] = r2t
    result[f"rounds_per_seed_{name}"] = [_finite_or_none(r) for r in per_seed]
    result[f"final_acc_{name}"] = round(final, 4)
    if not outcomes[0].sigmas or math.isnan(outcomes[0].sigmas[0]):
        return [name, str(r2t), f"{final:.4f}", "-", "-"]
    result[f"stopped_{name}"] = sum(o.stopped for o in outcomes)
    eps = max(o.epsilons[-1] for o in outcomes)
    return [
        name,
        str(r2t),
        f"{final:.4f}",
        f"{eps:.4f}",
        "/".join(_stage_sigmas(outcomes[0].sigmas)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=QUICK)
    parser.add_argument("--seeds", type=int, default=None, help="seeds per schedule")
    args = parser.parse_args()
    rounds = 30 if args.quick else 100
    seeds = args.seeds or (2 if args.quick else 5)
    names = [n for n in SCHEDULES if not (args.quick and n == "staged_plateau")]
    result = _header(args.quick, rounds, seeds)
    start = time.perf_counter()
    runs = _run_all(rounds, seeds, names)
    uniform_final = median([o.final_accuracy for o in runs["uniform"]])
    target = TARGET_FRACTION * uniform_final
    result["target_acc"] = round(target, 4)
    rows = [["schedule", "rounds_to_target", "final_acc", "eps_spent", "sigma_by_stage"]]
    rows += [_row(name, outcomes, target, result) for name, outcomes in runs.items()]
    result["nonprivate_final_acc"] = result.pop("final_acc_nonprivate")
    result.update(_privacy_checks(runs))
    result.update(_reductions(result, names))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"target accuracy {target:.4f} = {TARGET_FRACTION} x uniform final {uniform_final:.4f}")
    _emit(rows, result)


def _stage_sigmas(sigmas: Sequence[float]) -> list[str]:
    """The distinct noise multipliers in the order they were used."""
    out: list[str] = []
    for s in sigmas:
        text = f"{s:.3f}"
        if not out or out[-1] != text:
            out.append(text)
    return out


def _reductions(result: dict[str, object], names: Sequence[str]) -> dict[str, object]:
    """1 - rounds_x / rounds_uniform per schedule; the best one if any beats uniform."""
    uniform = result["rounds_uniform"]
    out: dict[str, object] = {}
    best: tuple[float, str | None] = (0.0, None)
    for name in names:
        mine = result[f"rounds_{name}"]
        key = "rounds_reduction" if name == "staged" else f"rounds_reduction_{name}"
        if name == "uniform":
            continue
        if not (isinstance(uniform, float) and isinstance(mine, float)):
            out[key] = None
            continue
        out[key] = reduction = round(1.0 - mine / uniform, 4)
        best = max(best, (reduction, name), key=lambda pair: pair[0])
    out["best_schedule"] = best[1]  # None: no schedule needed fewer rounds than uniform
    return out


def _emit(rows: Sequence[Sequence[str]], result: dict[str, object]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
