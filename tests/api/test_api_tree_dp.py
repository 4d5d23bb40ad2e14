"""Issue 12 part 4: differential privacy through two-tier secure aggregation on a tree
(distributed noise shares summed at every tier, or central noise on the secure sum),
accounted like the flat run; too few survivors in the tree release nothing."""

from __future__ import annotations

import pytest

from fedstrata.api import run
from fedstrata.config import load_config

TREE = [
    "output.run_store=false", "sim.workers=0", "data.name=synthetic", "data.num_clients=24",
    "data.synthetic_max_samples=40", "model.kind=logreg", "rounds.clients_per_round=null",
    "topology.mode=auto", "topology.edge_size=6", "topology.edge_min=4", "topology.edge_max=8",
    "topology.region_size=2", "topology.region_min=1", "secagg.enabled=true",
    "secagg.dropout_rate=0.1", "privacy.epsilon=2", "evaluation.every=0",
]  # fmt: skip


@pytest.mark.parametrize("mechanism", ["distributed", "central"])
def test_dp_through_tree_secure_aggregation_is_accounted_like_dp_accounting(
    mechanism, fixed_size_epsilon
) -> None:
    rounds = run(
        load_config(overrides=[*TREE, f"privacy.mechanism={mechanism}", "rounds.rounds=3"])
    ).simulation.rounds
    assert len(rounds) == 3
    sigmas = [m.privacy.noise_multiplier for m in rounds]
    for i, m in enumerate(rounds):
        assert m.privacy.epsilon_spent == pytest.approx(
            fixed_size_epsilon(sigmas[: i + 1], 24, 24), 0.01
        )
        assert m.secagg_tree.clusters >= 3  # the secure sum ran at every tier
        assert m.secagg_tree.withheld == 0
    assert rounds[-1].privacy.epsilon_spent <= 2.0 + 1e-9


def test_too_few_survivors_in_the_tree_release_nothing_but_are_charged(caplog) -> None:
    """Distributed DP plans noise for the cohort less its planned dropouts; a round with
    fewer survivors would carry less noise than was accounted: it releases a zero update
    and still spends its budget (conservative)."""
    rounds = run(
        load_config(
            overrides=[*TREE, "privacy.mechanism=distributed", "rounds.rounds=3",
                       "devices.dropout_rate=0.35", "secagg.dropout_rate=0.4"]
        )
    ).simulation.rounds  # fmt: skip
    withheld = [m for m in rounds if m.secagg_tree.withheld == 1]
    assert withheld
    assert all(m.privacy.epsilon_spent > 0 for m in rounds)
    assert "the sum is not unmasked" in caplog.text
