"""Issue 12: simulated client dropouts (devices.dropout_rate), one rule in every driver,
and a secure-aggregation round that loses its aggregate does not stop the run."""

from __future__ import annotations

import pytest

from fedstrata.api import run
from fedstrata.api.composition import TINY
from fedstrata.config import load_config
from fedstrata.sim.intake import dropped_out


def _run(*extra: str):
    return run(load_config(overrides=[*TINY, "rounds.rounds=4", *extra])).simulation


def test_the_draw_is_seeded_per_client_and_round_and_follows_the_rate() -> None:
    draws = [dropped_out(0.3, 7, r, c) is not None for r in range(50) for c in range(40)]
    assert draws == [dropped_out(0.3, 7, r, c) is not None for r in range(50) for c in range(40)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert dropped_out(0.0, 7, 0, 0) is None


@pytest.mark.parametrize(
    "driver",
    [(), ("topology.mode=auto", "topology.edge_size=4", "topology.edge_min=2",
          "topology.edge_max=4", "topology.region_min=1", "topology.region_size=2"),
     ("scheduling.async.enabled=true", "scheduling.async.concurrency=4",
      "scheduling.async.buffer_size=2")],
    ids=["flat", "tree", "async"],
)  # fmt: skip
def test_every_driver_loses_the_dropped_clients(driver) -> None:
    base = _run(*driver)
    dropped = _run(*driver, "devices.dropout_rate=0.4")
    assert sum(m.clients_failed for m in base.rounds) == 0
    assert sum(m.clients_failed for m in dropped.rounds) > 0
    if "scheduling.async.enabled=true" not in driver:  # FedBuff waits for K usable ones
        assert sum(m.clients_completed for m in dropped.rounds) < sum(
            m.clients_completed for m in base.rounds
        )


def test_a_secure_round_below_the_threshold_is_lost_and_the_run_goes_on(caplog) -> None:
    """The protocol refuses a round whose survivors cannot rebuild the masks; the model
    stays and the next rounds train (before, api.run stopped with SecAggError)."""
    res = _run("secagg.enabled=true", "secagg.dropout_rate=0.1", "devices.dropout_rate=0.45")
    lost = [m for m in res.rounds if m.secagg is not None and m.secagg.lost == 1]
    assert len(res.rounds) == 4
    assert lost, "expected at least one round below the protocol's threshold"
    assert len(lost) < 4
    assert "aggregate lost, model unchanged" in caplog.text
