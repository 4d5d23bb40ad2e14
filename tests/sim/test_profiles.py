"""ProfileTable: one client's legs equal the vectorised legs bit for bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.sim import ProfileTable
from fedstrata.sim.profiles import ProfileDistribution


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    examples=st.integers(0, 10**7),
    flops_per_example=st.floats(1.0, 1e12),
    down_bytes=st.integers(0, 10**10),
    up_bytes=st.integers(0, 10**10),
)
def test_client_legs_equal_the_vectorised_legs(
    seed: int, examples: int, flops_per_example: float, down_bytes: int, up_bytes: int
) -> None:
    table = ProfileTable.generate(7, ProfileDistribution(), np.random.default_rng(seed))
    for cid in range(len(table)):
        legs = table.legs_s(
            np.array([cid]), np.array([examples]), flops_per_example, down_bytes, up_bytes
        )
        expected = tuple(float(leg[0]) for leg in legs)
        got = table.client_legs_s(cid, examples, flops_per_example, down_bytes, up_bytes)
        assert got == expected
        assert all(type(leg) is float for leg in got)
