"""Issue 18 part 3: the baselines users run, reachable from the config.

``scheduling.stragglers=drop`` (a device still training at the deadline runs on and is
dropped, FedAvg/FedScale's rule) against the default ``partial`` (it sends the steps it
finished), and ``scheduling.overselect`` with only a deadline (FedScale's 1.3x
over-commitment without work allocation).
"""

import pytest

from fedstrata.api import run
from fedstrata.api.composition import TINY
from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported

# 16 clients with 1000x compute spread; a deadline most but not all devices meet
HETERO = (
    *TINY,
    "data.num_clients=16",
    "rounds.rounds=3",
    "rounds.clients_per_round=8",
    "devices.flops_max=2e6",
    "devices.compute_spread=1000",
    "rounds.deadline_s=1.0",
)


def _rounds(*extra: str):
    return run(load_config(overrides=[*HETERO, *extra])).simulation.rounds


@pytest.fixture(scope="module")
def partial():
    return _rounds("scheduling.registry_url=sqlite://")  # the scheduler on, defaults


@pytest.fixture(scope="module")
def dropped():
    return _rounds("scheduling.stragglers=drop")


def test_partial_cuts_slow_devices_at_the_deadline(partial, dropped):
    """Under ``partial`` only a device unable to finish one step is late."""
    assert sum(m.schedule.partial for m in partial) > 0
    assert sum(m.schedule.dropped for m in partial) < sum(m.schedule.dropped for m in dropped)


def test_drop_lets_slow_devices_run_on_and_rejects_them_late(dropped):
    assert all(m.schedule.partial == 0 for m in dropped)
    late = sum(m.clients_late for m in dropped)
    assert late > 0
    assert late == sum(m.schedule.dropped for m in dropped)
    assert all(m.sim_round_s <= 1.0 + 1e-9 for m in dropped)  # the round closes at the deadline


def test_drop_trains_fewer_examples_than_partial(partial, dropped):
    """A dropped device's work is lost; a cut device's finished steps count."""
    assert sum(m.schedule.throughput_eps * m.sim_round_s for m in dropped) < sum(
        m.schedule.throughput_eps * m.sim_round_s for m in partial
    )


def test_overselection_with_only_a_deadline_invites_more_clients():
    rounds = _rounds("scheduling.overselect=0.3", "scheduling.stragglers=drop")
    assert all(m.clients_selected == 11 for m in rounds)  # ceil(8 * 1.3)
    assert all(m.schedule.mean_steps > 0 and m.schedule.target_s == 0 for m in rounds)


def test_drop_without_a_deadline_is_refused():
    no_deadline = [o for o in HETERO if not o.startswith("rounds.deadline_s")]
    with pytest.raises(ConfigError, match=r"scheduling\.stragglers.*takes effect only with"):
        load_config(overrides=[*no_deadline, "scheduling.stragglers=drop"])


def test_the_runtime_takes_drop_as_the_simulator_does():
    """``drop`` is honoured by the deployment runtime too (its clients then run their
    whole plan and the center drops the late ones; tests/runtime/
    test_runtime_drop_stragglers.py); what the simulator refuses, the runtime refuses."""
    base = [*TINY, "rounds.deadline_s=1.0"]
    check_supported(load_config(overrides=[*base, "scheduling.stragglers=drop"]))
    with pytest.raises(ConfigError, match=r"scheduling\.stragglers"):
        check_supported(load_config(overrides=[*TINY, "scheduling.stragglers=drop"]))
