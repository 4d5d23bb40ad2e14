"""Issue 14 part 6: the gRPC center runs your own server strategy, by import string."""

from __future__ import annotations

import asyncio
import sys

from rthelpers import run_federation

from fedstrata.config import load_config
from fedstrata.runtime import deployment
from test_strategy import SMALL, _check_against_direct_computation, _module


def test_the_runtime_center_runs_your_strategy(tmp_path):
    """One process over loopback: every round's delta is the clipped mean of the
    clients' updates and the user's Nesterov step applies it."""
    _module(tmp_path, "strat_rt")
    overrides = [
        *SMALL,
        "rounds.clients_per_round=null",
        "server.optimizer=strat_rt:ServerNesterov",
        "server.aggregator=strat_rt:clipped_mean",
        f"project_dir={tmp_path}",
    ]
    result, _ = asyncio.run(run_federation(deployment(load_config(overrides=overrides))))
    _check_against_direct_computation(sys.modules["strat_rt"].LOG, result.params, clip=0.01)
