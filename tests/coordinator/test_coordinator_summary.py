"""The per-round account of lost clients (issue 11 defect 21)."""

import logging

import numpy as np

from fedstrata.coordinator import (
    ClientFailed,
    DeadlinePassed,
    RoundCoordinator,
    RoundOutcome,
    RoundPolicy,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.summary import NON_FINITE, failure_kind, summarize_losses


def _outcome(failed=(), late=(), selected=20):
    return RoundOutcome(3, selected, (), tuple(failed), tuple(late), 1.0, applied=False)


def test_failures_are_grouped_by_kind_with_a_hint_for_non_finite_updates():
    """Issue 11 defect 21: 20 NaN clients make one clause with a learning-rate hint."""
    failed = [(c, f"client {c}: update has {100 + c} NaN/Inf entries") for c in range(18)]
    failed += [(40, "RuntimeError: out of memory"), (41, "RuntimeError: CUDA error")]
    text = summarize_losses(_outcome(failed, late=(50,)))
    assert text is not None
    assert text.startswith("21 of 20 client updates not used: 18 x non-finite")
    assert "clients 0, 1, 2 and 15 more; e.g. update has 100 NaN/Inf entries" in text
    assert "2 x RuntimeError (clients 40, 41; e.g. RuntimeError: out of memory)" in text
    assert "client 50 missed the deadline" in text
    assert text.endswith(
        "(hint: non-finite updates mean local training diverged: lower client.lr)"
    )


def test_a_lone_failure_keeps_its_full_reason_and_no_hint():
    text = summarize_losses(_outcome([(5, "disconnected during the round")]))
    assert (
        text == "1 of 20 client updates not used: client 5 dropped: disconnected during the round"
    )
    assert summarize_losses(_outcome()) is None


def test_failure_kinds():
    assert failure_kind("client 3: update has 7 NaN/Inf entries") == NON_FINITE
    assert failure_kind("PayloadError: truncated body") == "PayloadError"
    assert failure_kind("worker process died") == "worker process died"
    assert len(failure_kind("x" * 500)) == 80


def test_a_round_of_failures_logs_one_warning(caplog):
    """Issue 11 defect 21: per-client drops are INFO; the round closes with one WARNING."""
    caplog.set_level(logging.INFO, logger="fedstrata.coordinator")
    m = RoundCoordinator(RoundPolicy(clients_per_round=10, min_clients=2, root_seed=0))
    (send,) = m.handle(StartRound(0, 0.0, np.arange(30, dtype=np.int64)))
    cohort = send.client_ids.tolist()
    for c in cohort[:9]:
        m.handle(ClientFailed(c, f"client {c}: update has 3 NaN/Inf entries"))
    m.handle(UpdateArrived(cohort[9], 1.0, 1.0))
    m.handle(DeadlinePassed(2.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("round 0: only 1 updates (< min_clients 2); aggregate unused;")
    assert "9 x non-finite update" in warnings[0]
    assert (
        sum(r.levelno == logging.INFO and "dropped" in r.getMessage() for r in caplog.records) == 9
    )
