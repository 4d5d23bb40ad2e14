"""The settlement rule on reported work is the one the simulator's deadline model uses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, DataError
from fedstrata.scheduling import settle_at_deadline, settle_reported, settlement_weights

works = st.lists(st.integers(1, 50), min_size=1, max_size=8)


@given(works, st.floats(0.0, 5.0), st.floats(0.0, 40.0), st.floats(0.0, 1.0))
def test_settling_a_report_is_settling_at_the_deadline(assigned, rate, deadline, frac):
    """A device reporting the work it did by the deadline is settled exactly as the
    simulator settles its model of that device."""
    a = np.array(assigned, dtype=np.int64)
    sim_done, sim_dropped = settle_at_deadline(a, np.full(a.size, rate), deadline,
                                               min_fraction=frac)  # fmt: skip
    did = np.floor(deadline * rate * np.ones(a.size)).astype(np.int64)
    done, dropped = settle_reported(a, did, frac)
    assert done.tolist() == sim_done.tolist()
    assert dropped.tolist() == sim_dropped.tolist()
    w = settlement_weights(a, done, dropped)
    assert ((w >= 0) & (w <= 1)).all()
    assert (w[dropped] == 0).all()


def test_bad_reports_are_refused_with_a_reason():
    with pytest.raises(ConfigError, match="min_fraction"):
        settle_reported(np.array([3]), np.array([1]), 1.5)
    with pytest.raises(DataError, match="assigned >= 1"):
        settle_reported(np.array([0]), np.array([1]), 0.0)
    with pytest.raises(DataError, match="one length"):
        settle_reported(np.array([3, 4]), np.array([1]), 0.0)
