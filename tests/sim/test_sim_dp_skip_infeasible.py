"""Issue 12 part 4: central DP with work allocation and ``scheduling.skip_infeasible``
(the default; was refused).

Under central DP no selector picks the cohort: the coordinator draws a Poisson sample
of the available clients at rate q. The planner's ``admit`` leaves the devices
predicted unable to do ``min_steps`` by the deadline out of the available set before
that draw (flat and tree alike), so such a device is sampled with probability 0 <= q,
the accountant's q and ε stay those of the run that does not skip, and each round
records how many it left out (``ScheduleStats.skipped_infeasible``).
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest.mock import patch

import numpy as np
import pytest
from test_sim_privacy_compose import make_config, stat

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.sim.scheduled import ScheduledPlanner

SCHED = ("rounds.deadline_s=5", "scheduling.allocation=true", "devices.flops_max=2e6")


@contextmanager
def spied_rounds():
    """Per round: the available ids, those predicted infeasible, and the cohort."""
    rounds: list[dict[str, set[int]]] = []
    admit, plans = ScheduledPlanner.admit, ScheduledPlanner.plans

    def spy_admit(self, r, available):
        ids = np.sort(available)
        s = self.settings
        late = self.predicted_finish(ids, s.min_steps, s.batch_size) > s.deadline_s
        rounds.append({"available": set(ids.tolist()), "infeasible": set(ids[late].tolist())})
        return admit(self, r, available)

    def spy_plans(self, r, cohort, default):
        rounds[-1]["cohort"] = set(np.asarray(cohort).tolist())
        return plans(self, r, cohort, default)

    with (
        patch.object(ScheduledPlanner, "admit", spy_admit),
        patch.object(ScheduledPlanner, "plans", spy_plans),
    ):
        yield rounds


def test_flat_dp_never_samples_an_infeasible_device_and_keeps_epsilon() -> None:
    with spied_rounds() as skipping:
        result = run(make_config(*SCHED))
    with spied_rounds() as keeping:
        kept = run(make_config(*SCHED, "scheduling.skip_infeasible=false"))
    assert all(r["infeasible"] for r in skipping)  # the deadline leaves some out
    assert all(not r["cohort"] & r["infeasible"] for r in skipping)
    assert any(r["cohort"] & r["infeasible"] for r in keeping)  # drawn when not skipped
    assert stat(result, "schedule.skipped_infeasible") == [len(r["infeasible"]) for r in skipping]
    assert stat(kept, "schedule.skipped_infeasible") == [None] * len(keeping)
    assert stat(result, "privacy.sampling_rate") == stat(kept, "privacy.sampling_rate")
    assert stat(result, "privacy.epsilon_spent") == stat(kept, "privacy.epsilon_spent")


def test_tree_dp_leaves_infeasible_devices_out_of_the_draw_the_same_way() -> None:
    regions = {"r0": {"e0": list(range(0, 10)), "e1": list(range(10, 20))},
               "r1": {"e2": list(range(20, 40))}}  # fmt: skip
    with spied_rounds() as rounds:
        result = run(make_config(*SCHED, "topology.mode=explicit", f"topology.regions={regions}"))
    assert all(r["infeasible"] for r in rounds)
    assert all(not r["cohort"] & r["infeasible"] for r in rounds)
    assert stat(result, "schedule.skipped_infeasible") == [len(r["infeasible"]) for r in rounds]
    assert all(m.tiers is not None for m in result.simulation.rounds)
    assert result.simulation.rounds[-1].privacy.epsilon_spent <= 2.0


def test_a_fixed_size_dp_cohort_still_refuses_skipping() -> None:
    """Under secure aggregation the DP cohort is k of all N: skipping would raise q."""
    with pytest.raises(ConfigError, match="raise the others' inclusion probability"):
        load_config(
            overrides=[
                "privacy.mechanism=distributed", "secagg.enabled=true",
                "rounds.clients_per_round=8", "data.num_clients=40", *SCHED,
            ]
        )  # fmt: skip


def test_a_flat_full_cohort_skips_infeasible_devices_too() -> None:
    """Issue 12: with every available client invited (no clients_per_round) the
    coordinator consults no selector, so skip_infeasible was accepted and ignored in
    a flat run; the planner's admit now leaves those devices out there too."""
    full = (*SCHED, "rounds.clients_per_round=null", "privacy.mechanism=none")
    with spied_rounds() as skipping:
        result = run(make_config(*full))
    with spied_rounds() as keeping:
        run(make_config(*full, "scheduling.skip_infeasible=false"))
    assert all(r["infeasible"] for r in skipping)
    assert all(not r["cohort"] & r["infeasible"] for r in skipping)
    assert all(r["cohort"] & r["infeasible"] for r in keeping)
    skipped = [m.schedule.skipped_infeasible for m in result.simulation.rounds]
    assert skipped == [len(r["infeasible"]) for r in skipping]
