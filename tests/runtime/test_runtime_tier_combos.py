"""Tiers combined with sampling, quorum, central DP and secure aggregation: the
runtime's explicit tree runs what the simulator's does (or refuses it by name)."""

import pytest

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import deployment

LEGACY = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=6",
    "rounds.rounds=2",
    "model.kind=logreg",
    "client.steps=3",
    "client.epochs=null",
]


def test_legacy_tiers_refuse_clients_per_round_which_they_cannot_draw():
    dep = deployment(load_config(overrides=[*LEGACY, "rounds.clients_per_round=4"]))
    with pytest.raises(ConfigError, match=r"rounds\.clients_per_round=4 with aggregator tiers"):
        dep.center(participants=2)
    with pytest.raises(ConfigError, match=r"topology\.mode: explicit"):
        dep.edge(3)
    dep.center()  # the clients at the center: the center draws the cohort
    every = deployment(load_config(overrides=[*LEGACY, "rounds.clients_per_round=null"]))
    every.center(participants=2)
    every.edge(3)
