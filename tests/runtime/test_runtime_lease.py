"""The center lease: compare-and-set in SQL, drift-bounded takeover, self-fencing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.errors import ConfigError, TransportError
from fedstrata.runtime.lease import LeaseKeeper, LeaseRow, LeaseTiming, SqlLease, Watch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path):
    return str(tmp_path / "registry.sqlite")


def test_only_one_candidate_takes_a_fresh_or_lapsed_lease(url):
    a, b = SqlLease(url, "fed", "a"), SqlLease(url, "fed", "b")
    assert a.read() is None
    assert a.acquire(None) == 1
    assert b.acquire(None) is None  # the row exists: the INSERT loses
    seen = b.read()
    assert seen == LeaseRow("a", 1, 1)
    assert a.renew(1)  # version moves: b's view is stale
    assert b.acquire(seen) is None
    fresh = b.read()
    assert b.acquire(fresh) == 2
    assert not a.renew(1)  # deposed: its renewal changes nothing
    assert b.read() == LeaseRow("b", 2, 3)
    a.close()
    b.close()


def test_release_frees_the_lease_at_once(url):
    a, b = SqlLease(url, "fed", "a"), SqlLease(url, "fed", "b")
    a.acquire(None)
    assert not b.release(1)  # not b's
    assert a.release(1)
    row = b.read()
    assert row is not None
    assert row.free
    watch = Watch(LeaseTiming(lease_s=60.0))
    watch.observe(row)
    assert watch.may_take()
    assert b.acquire(row) == 2


def test_leases_of_two_federations_are_independent(url):
    assert SqlLease(url, "one", "a").acquire(None) == 1
    assert SqlLease(url, "two", "a").acquire(None) == 1


def test_bad_settings_are_refused(url):
    with pytest.raises(ConfigError, match="lease_s"):
        LeaseTiming(lease_s=0)
    with pytest.raises(ConfigError, match="drift"):
        LeaseTiming(drift=0.5)
    with pytest.raises(ConfigError, match="holder"):
        SqlLease(url, "fed", "")


def test_an_unreachable_database_is_a_transport_error(tmp_path):
    with pytest.raises(TransportError, match="lease 'fed'"):
        SqlLease(str(tmp_path / "missing" / "dir" / "db.sqlite"), "fed", "a")


def test_watch_takes_over_only_after_the_version_stood_still_long_enough():
    clock = FakeClock()
    timing = LeaseTiming(lease_s=2.0, drift=0.05)
    watch = Watch(timing, clock)
    watch.observe(LeaseRow("a", 1, 5))
    clock.now += 2.0
    assert not watch.may_take()  # 2.0 < 2.1 on this clock
    watch.observe(LeaseRow("a", 1, 6))  # renewed: the count starts again
    clock.now += 2.09
    assert not watch.may_take()
    clock.now += 0.02
    assert watch.may_take()


@given(
    lease_s=st.floats(0.1, 100.0),
    drift=st.floats(0.0, 0.4),
    holder_rate=st.floats(0.0, 1.0),
    follower_rate=st.floats(0.0, 1.0),
    seen_after_s=st.floats(0.0, 50.0),
)
def test_a_standby_never_takes_over_while_the_holder_believes_it_holds(
    lease_s, drift, holder_rate, follower_rate, seen_after_s
):
    """Clock rates anywhere in [1 - drift, 1 + drift]: the holder's validity (from
    when it sent its renewal) ends in real time before any standby that observed that
    renewal (at or after the commit, itself after the send) may take over."""
    timing = LeaseTiming(lease_s, drift)
    h_rate = 1 - drift + 2 * drift * holder_rate
    f_rate = 1 - drift + 2 * drift * follower_rate
    holder_end_real = timing.holder_valid_s / h_rate  # renewal sent at real time 0
    takeover_real = seen_after_s + timing.takeover_after_s / f_rate
    assert takeover_real >= holder_end_real * (1 - 1e-12)


class _FlakyLease:
    """A lease whose renewals fail with the database unreachable."""

    name = "fed"

    def __init__(self, results):
        self.results = list(results)

    def renew(self, epoch):
        outcome = self.results.pop(0) if self.results else False
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def test_the_keeper_fences_itself_when_renewals_stop_succeeding():
    async def main():
        lease = _FlakyLease([True, TransportError("db down"), TransportError("db down")] * 50)
        keeper = LeaseKeeper(lease, 1, LeaseTiming(lease_s=0.3, drift=0.0))  # type: ignore[arg-type]
        assert keeper.remaining_s() > 0
        await asyncio.wait_for(keeper.run(), 5.0)
        assert keeper.lost.is_set()
        assert keeper.remaining_s() == 0.0

    asyncio.run(main())


def test_the_keeper_stops_at_once_when_deposed():
    async def main():
        keeper = LeaseKeeper(_FlakyLease([False]), 1, LeaseTiming(lease_s=60.0))  # type: ignore[arg-type]
        await asyncio.wait_for(keeper.run(), 5.0)
        assert keeper.lost.is_set()

    asyncio.run(main())


def test_the_keeper_keeps_a_live_lease(url):
    async def main():
        lease = SqlLease(url, "fed", "a")
        epoch = lease.acquire(None)
        keeper = LeaseKeeper(lease, epoch, LeaseTiming(lease_s=0.3))
        task = asyncio.create_task(keeper.run())
        before = lease.read()
        await asyncio.sleep(0.5)  # longer than the lease: renewals keep it
        assert not keeper.lost.is_set()
        after = lease.read()
        assert after.version > before.version
        assert after.holder == "a"
        task.cancel()

    asyncio.run(main())
