"""Issue 18 part 3: which DP method needs the fewest rounds to a target at ε = 2?

Federation (the one of ``bench/privacy.py``): scikit-learn digits, 1,000 clients
(Dirichlet label skew, alpha 0.5), multinomial logistic regression (650 parameters),
5 local epochs, batch 8, client SGD lr 0.05, updates clipped to L2 norm 1. Every
private arm spends at most ε = 2 at δ = 1e-5 over the planned rounds (fedstrata's
accountant; ``eps`` in the result is what the run reported after its last round).

Arms (all through ``fedstrata.api.run``; only the overrides below differ):

==================  ===========================================================
nonprivate          FedAvg, 100 clients per round, no clipping, no noise
nonprivate_fedavgm  the same with server momentum 0.9, server lr 0.3 (full run only)
dp_fedavg           central DP (DP-FedAvg, McMahan et al. 2018), uniform schedule
staged              dp_fedavg with the staged budget 0.3 / 0.5 / 0.2
dp_fedavgm          dp_fedavg with server momentum 0.9, server lr 0.3 (DP-FedAvgM);
                    the noise is added to the aggregate before the server
                    optimizer, so the momentum is post-processing
dp_cohort_{k}       dp_fedavg with k clients per round instead of 100 (same ε)
dp_adaptive_clip    dp_fedavg with adaptive clipping (Andrew et al. 2021): the
                    server clips to a norm tracking the median update norm,
                    starting at 1; the noised count is inside the same ε
dp_ftrl             DP-FTRL (Kairouz et al. 2021): tree-aggregated noise on the
                    running sum, clients in a shuffled order (each once per
                    10-round epoch, the tree restarts each epoch), no sampling;
                    RDP under replace-one neighbouring (dp-accounting's event)
dp_ftrl_m           dp_ftrl with server momentum 0.9, server lr 0.3
dp_fedavgm_cohort_300  dp_fedavgm with 300 clients per round
==================  ===========================================================

Quick mode runs nonprivate, dp_fedavg, staged and dp_fedavgm only.

Non-private training, the denominator of ``dp_rounds_vs_nonprivate_best``, is the
faster of the non-private arms run (``dp_nonprivate_reference``): the best method at
ε = 2 is compared with the best non-private training, not with a weaker one.

Target accuracy, fixed before any of these arms was run: 0.80 test accuracy in the
full run (100 planned rounds; bench/privacy.py had recorded 0.86 final accuracy for
the uniform schedule and 0.90 without DP), 0.65 in quick mode (20 planned rounds, one
seed, fewer arms: its figures are not comparable with the full run's).
Rounds to target: the first round count after which the test accuracy is at or above
the target; never reached is infinite (``None`` when the median is). Figures are
medians over seeds (the run seed varies: sampling, noise, initial weights; the
federation does not).

Results (full run, 3 seeds, 2-core CPU shared with five other jobs, 1,756 s; the
reference is the faster non-private arm, nonprivate_fedavgm, 16 rounds):

======================  =========  ================  ============  =========
arm                     per_round  rounds_to_target  x_nonprivate  final_acc
======================  =========  ================  ============  =========
nonprivate              100        21                1.31          0.897
nonprivate_fedavgm      100        16                1.00          0.928
dp_fedavg               100        43                2.69          0.839
staged                  100        51                3.19          0.817
dp_fedavgm              100        29                1.81          0.822
dp_cohort_200           200        37                2.31          0.847
dp_cohort_300           300        38                2.38          0.853
dp_adaptive_clip        100        34                2.12          0.875
dp_ftrl                 100        never             -             0.611
dp_ftrl_m               100        never             -             0.544
dp_fedavgm_cohort_300   300        27                1.69          0.847
======================  =========  ================  ============  =========

dp_rounds_vs_nonprivate_best 1.69 (dp_fedavgm_cohort_300); dp_staged_rounds_vs_uniform
1.19. Discussion: docs/privacy.md, "Methods at fixed ε".
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

EPSILON = 2.0
DELTA = 1e-5
NUM_CLIENTS = 1000
PER_ROUND = 100
TARGET_FULL = 0.80
TARGET_QUICK = 0.65
ROUNDS_FULL = 100
ROUNDS_QUICK = 20

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
    "sim.workers=0",
    "output.run_store=false",
    "output.progress=false",
)

PRIVATE = (
    "privacy.mechanism=central",
    f"privacy.epsilon={EPSILON}",
    f"privacy.delta={DELTA}",
    "privacy.clip_norm=1.0",
    "privacy.accountant=pld",
)


@dataclass(frozen=True)
class Arm:
    """One method: its overrides on top of ``BASE`` (and ``PRIVATE`` when private)."""

    name: str
    private: bool
    overrides: tuple[str, ...]
    per_round: int = PER_ROUND
    quick: bool = True  # run in quick mode too


_MOMENTUM = ("server.optimizer=fedavgm", "server.momentum=0.9", "server.lr=0.3")
_FTRL = ("privacy.schedule=uniform", "privacy.tree_aggregation=true", "privacy.accountant=rdp")

ARMS: tuple[Arm, ...] = (
    Arm("nonprivate", False, ()),
    Arm("nonprivate_fedavgm", False, _MOMENTUM, quick=False),
    Arm("dp_fedavg", True, ("privacy.schedule=uniform",)),
    Arm("staged", True, ("privacy.schedule=staged", "privacy.stage_weights=[0.3,0.5,0.2]")),
    Arm("dp_fedavgm", True, ("privacy.schedule=uniform", *_MOMENTUM)),
    Arm("dp_cohort_200", True, ("privacy.schedule=uniform",), per_round=200, quick=False),
    Arm("dp_cohort_300", True, ("privacy.schedule=uniform",), per_round=300, quick=False),
    Arm(
        "dp_adaptive_clip",
        True,
        ("privacy.schedule=uniform", "privacy.adaptive_clip=true", "privacy.clip_quantile=0.5"),
        quick=False,
    ),
    Arm("dp_ftrl", True, _FTRL, quick=False),
    Arm("dp_ftrl_m", True, (*_FTRL, *_MOMENTUM), quick=False),
    Arm(
        "dp_fedavgm_cohort_300",
        True,
        ("privacy.schedule=uniform", *_MOMENTUM),
        per_round=300,
        quick=False,
    ),
)


@dataclass(frozen=True)
class Outcome:
    """One run's per-round test accuracy and the ε it reported at the end."""

    accuracies: tuple[float, ...]
    epsilon: float | None
    sigma: float | None
    wall_s: float


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the library's WARNING logs (noise-to-signal, alerts) during the runs."""
    logger = logging.getLogger("fedstrata")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.propagate = propagate


def run_arm(arm: Arm, rounds: int, seed: int) -> Outcome:
    """Run one arm once for ``rounds`` rounds with run seed ``seed``."""
    from fedstrata.api import run
    from fedstrata.config import load_config

    sets = [*BASE, f"seed={seed}", f"rounds.rounds={rounds}"]
    sets.append(f"rounds.clients_per_round={arm.per_round}")
    if arm.private:
        sets += [*PRIVATE, f"privacy.planned_rounds={rounds}"]
    sets += arm.overrides
    start = time.perf_counter()
    result = run(load_config(overrides=sets)).simulation
    last = result.rounds[-1].privacy if result.rounds else None
    return Outcome(
        accuracies=tuple(float(m.accuracy or 0.0) for m in result.rounds),
        epsilon=None if last is None else float(last.epsilon_spent),
        sigma=None if last is None else float(last.noise_multiplier),
        wall_s=time.perf_counter() - start,
    )


def rounds_to_target(accuracies: Sequence[float], target: float) -> float:
    """Rounds run until the test accuracy first reaches ``target`` (inf if never)."""
    for i, acc in enumerate(accuracies):
        if acc >= target:
            return float(i + 1)
    return math.inf


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a / b, 4)


def _summarise(arm: Arm, outcomes: Sequence[Outcome], target: float) -> dict[str, Any]:
    per_seed = [rounds_to_target(o.accuracies, target) for o in outcomes]
    eps = [o.epsilon for o in outcomes if o.epsilon is not None]
    return {
        "rounds_to_target_median": _finite_or_none(float(statistics.median(per_seed))),
        "rounds_per_seed": [_finite_or_none(r) for r in per_seed],
        "eps": max(eps) if eps else None,
        "noise_multiplier": outcomes[0].sigma,
        "final_acc_median": round(statistics.median(o.accuracies[-1] for o in outcomes), 4),
        "clients_per_round": arm.per_round,
        "private": arm.private,
        "wall_s": round(sum(o.wall_s for o in outcomes), 1),
    }


def _best(methods: dict[str, dict[str, Any]], private: bool) -> str | None:
    """The (non-)private arm with the fewest median rounds to target (None: none got there)."""
    reached = [
        (m["rounds_to_target_median"], name)
        for name, m in methods.items()
        if m["private"] == private and m["rounds_to_target_median"] is not None
    ]
    return min(reached)[1] if reached else None


def measure(quick: bool, *, seeds: int | None = None) -> dict[str, Any]:
    """Rounds to target at ε = 2 for every arm, and the ratios the issue asks for."""
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    target = TARGET_QUICK if quick else TARGET_FULL
    n_seeds = seeds or (1 if quick else 3)
    arms = [a for a in ARMS if a.quick or not quick]
    methods: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    with _quiet():
        for arm in arms:
            outcomes = [run_arm(arm, rounds, seed) for seed in range(n_seeds)]
            methods[arm.name] = _summarise(arm, outcomes, target)
            print(f"  privacy: {arm.name} x{n_seeds}", file=sys.stderr, flush=True)
    best, reference = _best(methods, private=True), _best(methods, private=False)
    nonprivate = None if reference is None else methods[reference]["rounds_to_target_median"]
    out: dict[str, Any] = {
        "dp_rounds_vs_nonprivate_best": None
        if best is None
        else _ratio(methods[best]["rounds_to_target_median"], nonprivate),
        "dp_best_method": best,
        "dp_nonprivate_reference": reference,
        "dp_staged_rounds_vs_uniform": _ratio(
            methods["staged"]["rounds_to_target_median"],
            methods["dp_fedavg"]["rounds_to_target_median"],
        ),
        "dp_staged_rounds_vs_nonprivate": _ratio(
            methods["staged"]["rounds_to_target_median"], nonprivate
        ),
        "dp_target_acc": target,
        "dp_target_rule": f"fixed before the runs: {TARGET_FULL} (full, {ROUNDS_FULL} "
        f"rounds) / {TARGET_QUICK} (quick, {ROUNDS_QUICK} rounds) test accuracy",
        "dp_seeds": n_seeds,
        "dp_rounds_planned": rounds,
        "dp_epsilon": EPSILON,
        "dp_delta": DELTA,
        "dp_methods": methods,
        "dp_wall_s": round(time.perf_counter() - start, 1),
    }
    if best is None or reference is None:
        out["dp_rounds_vs_nonprivate_best_note"] = "a private or non-private arm missed the target"
    if out["dp_staged_rounds_vs_uniform"] is None:
        out["dp_staged_rounds_vs_uniform_note"] = "staged or uniform missed the target"
    return out
