"""ProcessExecutor's chunking: guided self-scheduling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fedstrata.sim.executor import CHUNKS_IN_FLIGHT, _guided


@given(
    remaining=st.integers(1, 10_000),
    largest=st.integers(1, 64),
    processes=st.integers(2, 32),
)
def test_chunks_shrink_to_single_clients_as_a_round_drains(
    remaining: int, largest: int, processes: int
) -> None:
    sizes = []
    while remaining:
        size = min(_guided(remaining, largest, processes), remaining)
        assert 1 <= size <= largest
        assert size == 1 or size * CHUNKS_IN_FLIGHT * processes <= remaining
        sizes.append(size)
        remaining -= size
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == 1
