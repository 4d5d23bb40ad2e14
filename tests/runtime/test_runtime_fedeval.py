"""Federated evaluation in the runtime equals the simulator's (issue 13, fedeval).

Why exact equality: both drivers sample the same clients (one function,
``coordinator.fedeval.evaluation_sample``), split each client's data with one rule
(``builders_fedeval``), evaluate the same float32 model (the runtime's center sends the
round's model dense) with the same trainer code on the same held-out rows, and
aggregate with the same statistics (``FedEvalMetrics.from_results``). Training is
already bit-identical (test_runtime_rounds), so every figure matches bit for bit; only
``wall_s`` (real time) differs.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from rthelpers import SMALL
from tiertree import run_regions, run_tree

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.coordinator.fedeval import fed_eval_event
from fedstrata.errors import ConfigError, TransportError
from fedstrata.monitoring import ClientEval, ClientFailure, FedEvalMetrics, MemorySink, RunStore
from fedstrata.runtime import check_supported, deployment
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.records import RoundRecord

EVAL = ["evaluation.every=1", "evaluation.clients=4", "evaluation.holdout=0.25"]


def _same(runtime: list[FedEvalMetrics], sim: list[FedEvalMetrics]) -> None:
    assert [e.round_idx for e in runtime] == [e.round_idx for e in sim]
    for ours, theirs in zip(runtime, sim, strict=True):
        assert ours.clients_selected == theirs.clients_selected
        assert ours.clients_failed == theirs.clients_failed
        assert ours.results == theirs.results  # client ids, examples, metrics: exact
        assert ours.distributions == theirs.distributions


def _events(result) -> list[FedEvalMetrics]:
    return result.fed_evals


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["evaluation.every=2", "rounds.rounds=3"],
        ["downlink.preset=int8"],  # evaluated on the exact model, not the client's replica
        ["secagg.enabled=true"],  # results bypass the masked protocol
    ],
    ids=["every-round", "every-2", "downlink", "secagg"],
)
def test_runtime_federated_evaluation_equals_the_simulator(federation, extra):
    cfg = load_config(overrides=[*SMALL, *EVAL, *extra])
    sim = run(cfg).simulation
    result, _ = asyncio.run(federation(deployment(cfg)))
    assert result.params.tobytes() == sim.params.tobytes()  # trained on the same parts
    events = _events(result)
    assert len(events) == len(sim.fed_evals) > 0
    assert all(e.clients_selected == 4 and e.clients_failed == 0 for e in events)
    _same(events, sim.fed_evals)


def test_evaluation_cadence_follows_every_and_the_last_round(federation):
    cfg = load_config(overrides=[*SMALL, *EVAL, "evaluation.every=2", "rounds.rounds=3"])
    result, _ = asyncio.run(federation(deployment(cfg)))
    assert [e.round_idx for e in _events(result)] == [1, 2]


def test_a_client_that_fails_its_evaluation_is_counted_and_the_run_goes_on(federation):
    cfg = load_config(overrides=[*SMALL, *EVAL, "evaluation.clients=6"])
    dep = deployment(cfg)

    def wrap(cid: int, link):
        if cid == 2:
            original = link.download_eval

            async def broken(round_idx: int):
                raise RuntimeError("disk full")

            link.download_eval = broken
            del original
        return link

    result, _ = asyncio.run(federation(dep, wrap=wrap))
    assert len(result.rounds) == 2
    for record in result.rounds:
        event = record.fed_eval
        assert event is not None
        assert event.clients_selected == 6
        assert event.clients_failed == 1
        assert 2 not in {r.client_id for r in event.results}
        (failure,) = record.fed_eval_failures
        assert isinstance(failure, ClientFailure)
        assert failure.client_id == 2
        assert failure.reason.startswith("federated evaluation: ")
        assert "disk full" in failure.reason


def test_a_client_whose_connection_breaks_during_evaluation_is_counted_failed(federation):
    cfg = load_config(overrides=[*SMALL, *EVAL, "evaluation.clients=6", "rounds.rounds=1"])
    dep = deployment(cfg)

    def wrap(cid: int, link):
        if cid == 4:

            async def breaks(round_idx: int):
                await link.close()  # the session ends as a dying process's would
                raise TransportError("connection reset during the evaluation")

            link.download_eval = breaks
        return link

    async def no_wait(_s: float) -> None:
        return None

    result, reports = asyncio.run(federation(dep, wrap=wrap, sleep=no_wait))
    event = result.rounds[0].fed_eval
    assert event is not None
    assert event.clients_selected == 6
    assert event.clients_failed == 1
    (failure,) = result.rounds[0].fed_eval_failures
    assert failure.client_id == 4
    assert "disconnected" in failure.reason
    assert reports[4].reconnects  # it came back; the run went on


def test_edges_relay_evaluations_and_equal_the_simulator():
    edges = {"e0": [0, 1, 2], "e1": [3, 4, 5]}
    cfg = load_config(
        overrides=[
            *SMALL, *EVAL, "topology.mode=explicit",
            'topology.edges={"e0": [0, 1, 2], "e1": [3, 4, 5]}', "rounds.clients_per_round=4",
            "topology.kappa_edge=2",
        ]
    )  # fmt: skip
    sim = run(cfg).simulation
    out = asyncio.run(run_tree(deployment(cfg), edges))
    assert out.result.params.tobytes() == sim.params.tobytes()
    events = _events(out.result)
    assert len(events) == 2
    assert all(e.clients_failed == 0 for e in events)
    _same(events, sim.fed_evals)


def test_fedbuff_server_steps_are_evaluated_as_in_the_simulator(federation):
    """One client in flight: the order of events is the simulator's (test_runtime_fedbuff),
    and each due server step's model is evaluated (in the background) on its sample."""
    cfg = load_config(
        overrides=[
            *SMALL, *EVAL, "evaluation.every=2", "scheduling.async.enabled=true",
            "scheduling.async.buffer_size=2", "scheduling.async.concurrency=1",
            "scheduling.async.server_updates=3",
        ]
    )  # fmt: skip
    check_supported(cfg)
    sim = run(cfg).simulation
    result, _ = asyncio.run(federation(deployment(cfg)))
    assert result.params.tobytes() == sim.params.tobytes()
    assert [e.round_idx for e in result.fed_evals] == [1, 2]  # every 2nd step and the last
    assert all(e.clients_failed == 0 for e in result.fed_evals)
    _same(result.fed_evals, sim.fed_evals)


def test_fedbuff_with_clients_in_flight_evaluates_every_due_step(federation):
    """Several clients in flight: an evaluation task waits behind a client's training,
    the run ends only after the last step's evaluation."""
    cfg = load_config(
        overrides=[
            *SMALL, *EVAL, "evaluation.clients=6", "scheduling.async.enabled=true",
            "scheduling.async.buffer_size=2", "scheduling.async.concurrency=3",
            "scheduling.async.server_updates=3",
        ]
    )  # fmt: skip
    result, _ = asyncio.run(federation(deployment(cfg)))
    assert [e.round_idx for e in result.fed_evals] == [0, 1, 2]
    for event in result.fed_evals:
        assert event.clients_selected == 6
        assert event.clients_failed == 0
        acc = event.get("accuracy")
        assert acc is not None
        assert sum(r.num_examples for r in event.results) == acc.examples


def test_privacy_with_evaluation_stays_refused():
    with pytest.raises(ConfigError, match="does not combine with federated evaluation"):
        load_config(overrides=[*SMALL, *EVAL, "privacy.mechanism=central"])


def test_the_center_records_the_evaluation_in_its_run_store_before_the_round(tmp_path):
    config = load_config(overrides=["rounds.rounds=2"])
    dep = SimpleNamespace(config=config, trainer=SimpleNamespace(spec=None), test_data=None)
    event, failed = fed_eval_event(
        0, 2, [ClientEval(3, 5, {"accuracy": 0.8})], [(1, "gone")], wall_s=0.1
    )
    outcome = RoundOutcome(0, 2, (0, 1), (), (), 1.0, True)
    record = RoundRecord(outcome, 10, 20, 0.3, fed_eval=event, fed_eval_failures=failed)
    sink = MemorySink()
    with RunStore.create(tmp_path / "run") as store:
        recorder = RunRecorder(dep, store, clock=iter(range(100)).__next__)  # type: ignore[arg-type]
        recorder.sinks = (*recorder.sinks, sink)
        recorder.store.save_model = lambda *_: None  # type: ignore[method-assign]
        recorder.on_round(0, record, np.zeros(3, dtype=np.float32))
        assert store.fed_evals() == [event]
        assert [f.client_id for f in store.failures()] == [1]
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds[:2] == ["ClientFailure", "FedEvalMetrics"]
    assert "RoundMetrics" in kinds[2:]


def test_regions_relay_to_their_edges_and_equal_the_simulator():
    regions = {"r0": {"e0": [0, 1], "e1": [2]}, "r1": {"e2": [3, 4, 5]}}
    cfg = load_config(
        overrides=[
            *SMALL, *EVAL, "topology.mode=explicit", f"topology.regions={regions}",
            "rounds.clients_per_round=6",
        ]
    )  # fmt: skip
    sim = run(cfg).simulation
    out = asyncio.run(run_regions(deployment(cfg), regions))
    assert out.result.params.tobytes() == sim.params.tobytes()
    events = _events(out.result)
    assert [e.clients_failed for e in events] == [0, 0]
    _same(events, sim.fed_evals)
