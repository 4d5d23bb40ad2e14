"""The center's leadership lease: one active center, standbys that take over when it lapses.

The lease is a row of a SQL table (``fedstrata_leases``) in the registry's database
(any SQLAlchemy URL; a file path is SQLite, the default). The table belongs to the
runtime, not to the registry's migrations: :class:`SqlLease` creates it if missing.

Row: ``name`` (the federation), ``holder`` (a center's name, ``""``: released),
``epoch`` (incremented at every change of holder: the fencing token, which also names
the center's term on the wire) and ``version`` (incremented at every renewal).
Every write is one compare-and-set ``UPDATE ... WHERE`` (or an ``INSERT`` that the
primary key makes unique), so two candidates never both win.

Time, and what is assumed about clocks: **no wall-clock time is compared between
hosts**. Each node measures durations on its own monotonic clock; the only assumption
is that clock *rates* differ from real time by at most ``drift`` (default 5%: far
above the ~1e-4 of real quartz clocks), with no bound on their offsets.

* The holder takes its lease as valid until ``t_sent + lease_s * (1 - drift)`` on its
  clock, ``t_sent`` being when it *sent* its last successful renewal (so the database
  round trip is inside the window). That is at most ``lease_s`` of real time after the
  renewal committed.
* A standby takes over only after it has seen the same ``version`` for ``lease_s *
  (1 + drift)`` on its own clock, at least ``lease_s`` of real time after a commit it
  observed, hence after the holder's validity ended.

So, with renewals every ``lease_s / 3``, a live holder is never deposed, and a dead or
partitioned one is replaced between ``lease_s`` and ``lease_s * (1 + drift)`` plus
one poll after its last renewal. A holder that cannot renew within its validity
fences itself (:attr:`LeaseKeeper.lost`); the center node then stops serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from fedstrata.errors import ConfigError, FedstrataError, TransportError
from fedstrata.scheduling._sql import registry_url

__all__ = ["LeaseKeeper", "LeaseLost", "LeaseRow", "LeaseTiming", "SqlLease", "Watch"]

log = logging.getLogger(__name__)

_META = MetaData()
_LEASES = Table(
    "fedstrata_leases",
    _META,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("version", Integer, nullable=False),
)

Monotonic = Callable[[], float]
_T = TypeVar("_T")


class LeaseLost(FedstrataError):
    """This center no longer holds the lease: it must neither write nor acknowledge."""


@dataclass(frozen=True)
class LeaseTiming:
    """Lease length and the clock-rate bound; see the module docstring.

    Raises:
        ConfigError: ``lease_s`` not > 0 or ``drift`` outside [0, 0.5).
    """

    lease_s: float = 2.0
    drift: float = 0.05

    def __post_init__(self) -> None:
        if self.lease_s <= 0:
            raise ConfigError(f"LeaseTiming.lease_s must be > 0, got {self.lease_s}")
        if not 0 <= self.drift < 0.5:
            raise ConfigError(f"LeaseTiming.drift must be in [0, 0.5), got {self.drift}")

    @property
    def holder_valid_s(self) -> float:
        """How long a renewal keeps the holder valid, on its own clock."""
        return self.lease_s * (1 - self.drift)

    @property
    def takeover_after_s(self) -> float:
        """How long a standby must see one version unchanged, on its own clock."""
        return self.lease_s * (1 + self.drift)

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3


@dataclass(frozen=True)
class LeaseRow:
    """The lease as read: who holds it, its epoch and renewal count."""

    holder: str
    epoch: int
    version: int

    @property
    def free(self) -> bool:
        return self.holder == ""


class SqlLease:
    """The lease of federation ``name`` in the database at ``url``, seen by ``holder``.

    Every method is one short blocking transaction (call it from a thread in asyncio
    code); database errors become :class:`~fedstrata.errors.TransportError`.

    Raises:
        ConfigError: an empty name or holder.
    """

    def __init__(self, url: str, name: str, holder: str) -> None:
        if not name or not holder:
            raise ConfigError(f"a lease needs a name and a holder, got {name!r}, {holder!r}")
        self.name, self.holder = name, holder
        self.url = registry_url(url)
        self._engine = _engine(self.url)
        self._guard(lambda: _META.create_all(self._engine, checkfirst=True))

    def _guard(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise TransportError(f"lease {self.name!r} at {self.url}: {exc}") from exc

    def read(self) -> LeaseRow | None:
        """The lease now (None: never taken)."""

        def go() -> LeaseRow | None:
            with self._engine.connect() as conn:
                query = sa_select(_LEASES).where(_LEASES.c.name == self.name)
                row = conn.execute(query).first()
            return None if row is None else LeaseRow(row.holder, row.epoch, row.version)

        return self._guard(go)

    def acquire(self, seen: LeaseRow | None) -> int | None:
        """Take the lease if it is still as ``seen`` (None: never taken); the new epoch,
        or None when another candidate changed it first."""
        if seen is None:
            try:
                self._write(sa_insert(_LEASES).values(
                    name=self.name, holder=self.holder, epoch=1, version=1
                ))  # fmt: skip
            except IntegrityError:
                return None
            return 1
        changed = self._write(
            sa_update(_LEASES)
            .where(_LEASES.c.name == self.name, _LEASES.c.version == seen.version)
            .values(holder=self.holder, epoch=seen.epoch + 1, version=seen.version + 1)
        )
        return seen.epoch + 1 if changed else None

    def renew(self, epoch: int) -> bool:
        """Renew the lease of ``epoch``; False if it is no longer this holder's."""
        return self._owned_update(epoch, holder=self.holder)

    def release(self, epoch: int) -> bool:
        """Give the lease up (a standby may take it at once); False if not held."""
        return self._owned_update(epoch, holder="")

    def _owned_update(self, epoch: int, *, holder: str) -> bool:
        c = _LEASES.c
        stmt = (
            sa_update(_LEASES)
            .where(c.name == self.name, c.holder == self.holder, c.epoch == epoch)
            .values(holder=holder, version=c.version + 1)
        )
        return self._write(stmt)

    def _write(self, stmt: object) -> bool:
        def go() -> bool:
            with self._engine.begin() as conn:
                return bool(conn.execute(stmt).rowcount)  # type: ignore[call-overload]

        return self._guard(go)

    def close(self) -> None:
        self._engine.dispose()


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": 10.0})
    event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


class Watch:
    """A standby's view of the lease: when it may be taken (pure; clock injected).

    :meth:`observe` with every read; :meth:`may_take` is True when the lease is free, or
    its version has not moved for ``timing.takeover_after_s`` on this node's clock.
    """

    def __init__(self, timing: LeaseTiming, clock: Monotonic = time.monotonic) -> None:
        self.timing, self.clock = timing, clock
        self.row: LeaseRow | None = None
        self._since = clock()

    def observe(self, row: LeaseRow | None) -> None:
        if row != self.row:
            self.row, self._since = row, self.clock()

    @property
    def since(self) -> float:
        """When (this node's clock) the lease was last seen to change."""
        return self._since

    def may_take(self) -> bool:
        if self.row is None or self.row.free:
            return True
        return self.clock() - self._since >= self.timing.takeover_after_s


class LeaseKeeper:
    """The holder's side: renews every ``timing.renew_every_s``; fences itself when a
    renewal did not succeed within its validity (:attr:`lost` is set).

    Ownership and cancellation: :meth:`run` is one task the center node owns;
    cancelling it stops renewing (the lease then lapses).
    """

    def __init__(
        self, lease: SqlLease, epoch: int, timing: LeaseTiming, clock: Monotonic = time.monotonic
    ) -> None:
        self.lease, self.epoch, self.timing, self.clock = lease, epoch, timing, clock
        self.lost = asyncio.Event()
        self._valid_until = clock() + timing.holder_valid_s  # acquire was sent before now

    def remaining_s(self) -> float:
        """Seconds of validity left on this node's clock (<= 0: not the holder)."""
        return 0.0 if self.lost.is_set() else self._valid_until - self.clock()

    async def run(self) -> None:
        while self.remaining_s() > 0:
            sent = self.clock()
            try:  # a renewal that outlasts the validity is a failed one
                renewal = asyncio.to_thread(self.lease.renew, self.epoch)
                ok = await asyncio.wait_for(renewal, max(0.01, self.remaining_s()))
            except (TransportError, TimeoutError) as exc:
                log.warning("lease %s: renewal failed: %r", self.lease.name, exc)
                ok = None
            if ok is False:
                break
            if ok:
                self._valid_until = sent + self.timing.holder_valid_s
            await asyncio.sleep(min(self.timing.renew_every_s, max(0.0, self.remaining_s())))
        log.error("lease %s: lost (epoch %d); this center stops", self.lease.name, self.epoch)
        self.lost.set()
