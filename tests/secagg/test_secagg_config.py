"""Config validation, the SecAgg+ parameter formula, and the ring-overflow bound."""

from __future__ import annotations

import logging
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.errors import ConfigError
from fedstrata.secagg import NeighbourGraph, SecAggConfig, check_ring_capacity, derive_parameters


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 3000), dropout=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3]))
def test_derived_parameters_satisfy_their_rules(n: int, dropout: float) -> None:
    p = derive_parameters(n, dropout)
    assert p.threshold > p.degree / 2  # no two disjoint threshold sets of holders
    assert p.threshold <= p.degree <= n - 1
    if p.degree < n - 1:
        assert p.degree % 2 == 0
        assert p.degree >= 2 * math.ceil(math.log2(n))
        assert p.meets_targets
        assert p.disconnect_log2 <= -40
        assert p.failure_log2 <= -20


def test_degree_grows_logarithmically() -> None:
    degrees = [derive_parameters(n, 0.1).degree for n in (1_000, 10_000, 100_000)]
    assert degrees == sorted(degrees)
    assert degrees[-1] < 60  # O(log n), far below n


def test_more_dropout_needs_a_denser_graph() -> None:
    assert derive_parameters(1000, 0.3).degree > derive_parameters(1000, 0.1).degree


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_clients": 1}, "num_clients"),
        ({"vector_length": 0}, "vector_length"),
        ({"degree": 7}, "even"),
        ({"degree": 200}, "degree"),
        ({"threshold": 0}, "threshold"),
        ({"threshold": 11}, "threshold"),
        ({"modulus_bits": 33}, "modulus_bits"),
        ({"input_bits": 30}, "ring overflow"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, int], field: str) -> None:
    base = {"num_clients": 100, "vector_length": 8, "threshold": 6, "degree": 10}
    with pytest.raises(ConfigError, match=field):
        SecAggConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_derive_rejects_bad_rates() -> None:
    with pytest.raises(ConfigError, match="dropout_rate"):
        derive_parameters(100, 1.5)
    with pytest.raises(ConfigError, match=r"< 0\.5"):
        derive_parameters(100, 0.3, corrupt_rate=0.3)


def test_ring_capacity_bound() -> None:
    check_ring_capacity(1000, 22, 32)  # 1000 * 2^22 < 2^32
    with pytest.raises(ConfigError, match="input_bits <= 22"):
        check_ring_capacity(1000, 23, 32)


def test_for_cohort_full_graph_option() -> None:
    cfg = SecAggConfig.for_cohort(50, 4, 0.1, sparse=False)
    assert cfg.full_graph
    assert cfg.degree == 49
    assert cfg.threshold == 25


def test_harary_graph_is_symmetric_and_regular() -> None:
    g = NeighbourGraph(101, 10, seed=7)
    for u in range(101):
        nbrs = g.neighbours(u)
        assert len(nbrs) == 10
        assert u not in nbrs
        assert all(g.are_neighbours(int(v), u) for v in nbrs)
    assert sum(g.are_neighbours(0, v) for v in range(101)) == 10


def test_full_graph_correctness_warning_says_what_to_change(caplog) -> None:
    """Issue 11 defect 24: the warning names the remedies, and they work."""
    caplog.set_level(logging.WARNING, logger="fedstrata.secagg.config")
    assert not derive_parameters(20, 0.1).meets_targets
    (record,) = caplog.records
    msg = record.getMessage()
    assert "2^-13.6" in msg
    assert "1 in 12,723" in msg
    assert "cohort of at least 30 clients (rounds.clients_per_round)" in msg
    assert "Safe to ignore" in msg
    rate = float(re.search(r"dropout_rate <= ([0-9.]+) \(secagg.dropout_rate\)", msg)[1])
    caplog.clear()
    assert derive_parameters(30, 0.1).meets_targets
    assert derive_parameters(29, 0.1).meets_targets is False
    assert derive_parameters(20, rate).meets_targets
    assert not derive_parameters(20, rate + 0.002).meets_targets
