"""Availability soak on a simulated clock: a year of faults in a second (issue 15 part 5).

The federation **accepts updates** while a center is active and at least ``quorum``
clients are reachable (up, behind a live edge). Every node fails and is repaired as an
alternating renewal process with exponential times: ``mtbf_s`` up, ``mttr_s`` down
(:class:`FaultRate`, one per node kind). What the standbys change:

* centers: without a standby a dead center is down until it is repaired (restarted
  from its checkpoint; the restart is in ``mttr_s``). With standbys, the standby that
  is up takes over ``center_failover_s`` after the active one died (the measured
  failover time); the repaired node becomes a standby.
* edges: without spares a dead edge's clients are unreachable until it is repaired.
  With spares, a spare that is up takes the dead edge's clients ``edge_failover_s``
  later; the repaired node joins the spares. With none left, the clients wait for the
  next repaired node.
* the pool: with standbys, a dead center or edge node is *replaced* from the hot
  pool after ``replace_s`` (the published design's 30 s node replacement) instead of
  being down for its ``mttr_s``; without, it is repaired in ``mttr_s``.

:func:`simulate` runs the events in order (a heap; the clock is simulated, nothing
sleeps) and integrates the time the federation accepts updates. Given the same
generator it draws the same faults with and without standbys only if the node counts
match; compare runs with :func:`compare`, which uses one seed for both.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace

import numpy as np

from fedstrata.errors import ConfigError

__all__ = ["FaultRate", "SoakReport", "SoakSpec", "compare", "simulate"]

HOUR_S = 3600.0


@dataclass(frozen=True)
class FaultRate:
    """Mean time between failures and mean time to repair, in seconds."""

    mtbf_s: float
    mttr_s: float

    def __post_init__(self) -> None:
        if self.mtbf_s <= 0 or self.mttr_s <= 0:
            raise ConfigError(f"FaultRate needs mtbf_s, mttr_s > 0, got {self}")

    @property
    def steady_state(self) -> float:
        """Fraction of time one such node is up."""
        return self.mtbf_s / (self.mtbf_s + self.mttr_s)


@dataclass(frozen=True)
class SoakSpec:
    """The federation and its fault process; see the module docstring.

    The defaults make one center alone up ``24 / 26 = 92.3%`` of the time (a fault a
    day, two hours to restart it), the published availability without standby.
    """

    center: FaultRate = field(default_factory=lambda: FaultRate(24 * HOUR_S, 2 * HOUR_S))
    edge: FaultRate = field(default_factory=lambda: FaultRate(24 * HOUR_S, 2 * HOUR_S))
    client: FaultRate = field(default_factory=lambda: FaultRate(12 * HOUR_S, 1 * HOUR_S))
    edges: int = 10
    clients_per_edge: int = 10
    quorum_fraction: float = 0.5
    standby_centers: int = 1
    spare_edges: int = 1
    center_failover_s: float = 5.0
    edge_failover_s: float = 5.0
    replace_s: float = 30.0
    horizon_s: float = 365 * 24 * HOUR_S

    def __post_init__(self) -> None:
        if self.edges < 1 or self.clients_per_edge < 1 or self.horizon_s <= 0:
            raise ConfigError(f"SoakSpec needs edges, clients_per_edge >= 1, horizon > 0: {self}")
        if min(self.standby_centers, self.spare_edges) < 0 or not 0 < self.quorum_fraction <= 1:
            raise ConfigError(f"SoakSpec: bad standby counts or quorum_fraction: {self}")

    @property
    def quorum(self) -> int:
        return max(1, int(np.ceil(self.quorum_fraction * self.edges * self.clients_per_edge)))

    def without_standby(self) -> SoakSpec:
        return replace(self, standby_centers=0, spare_edges=0)


@dataclass(frozen=True)
class SoakReport:
    """What a soak measured (times in simulated seconds)."""

    availability: float
    center_down_s: float
    quorum_lost_s: float
    center_failovers: int
    edge_rehomes: int
    horizon_s: float


class _Sim:
    """The event loop's state (one soak)."""

    def __init__(self, spec: SoakSpec, rng: np.random.Generator) -> None:
        self.s, self.rng = spec, rng
        self.t, self.heap = 0.0, list[tuple[float, int, str, int, int]]()
        self.seq = 0
        n_centers, n_edges = 1 + spec.standby_centers, spec.edges + spec.spare_edges
        self.center_up, self.active = [True] * n_centers, 0
        self.takeover_pending = False
        self.edge_up = [True] * n_edges
        self.slot_of = list(range(spec.edges)) + [-1] * spec.spare_edges  # node -> slot
        self.slot_live, self.slot_version = [True] * spec.edges, [0] * spec.edges
        self.orphans: list[int] = []
        self.up_in_slot = [spec.clients_per_edge] * spec.edges
        self.failovers = self.rehomes = 0
        n_clients = spec.edges * spec.clients_per_edge
        kinds = (("c", n_centers, spec.center), ("e", n_edges, spec.edge))
        for kind, count, rate in (*kinds, ("k", n_clients, spec.client)):
            for node in range(count):
                self.push(self.rng.exponential(rate.mtbf_s), kind + "fail", node)

    def push(self, at: float, what: str, node: int, version: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, what, node, version))

    def reachable(self) -> int:
        return sum(u for u, live in zip(self.up_in_slot, self.slot_live, strict=True) if live)

    # centers -------------------------------------------------------------------
    def cfail(self, node: int, _v: int) -> None:
        self.center_up[node] = False
        down_s = self.s.replace_s if self.s.standby_centers else self.s.center.mttr_s
        self.push(self.t + self.rng.exponential(down_s), "crepair", node)
        if node == self.active:
            self.active = -1
            self._elect(self.s.center_failover_s)

    def crepair(self, node: int, _v: int) -> None:
        self.center_up[node] = True
        self.push(self.t + self.rng.exponential(self.s.center.mtbf_s), "cfail", node)
        if self.active < 0 and not self.takeover_pending:
            self._elect(self.s.center_failover_s if self.s.standby_centers else 0.0)

    def _elect(self, after_s: float) -> None:
        for node, up in enumerate(self.center_up):
            if up:
                self.takeover_pending = True
                self.push(self.t + after_s, "ctake", node)
                return

    def ctake(self, node: int, _v: int) -> None:
        self.takeover_pending = False
        if self.center_up[node]:
            self.active = node
            self.failovers += 1
        else:
            self._elect(self.s.center_failover_s)

    # edges ---------------------------------------------------------------------
    def efail(self, node: int, _v: int) -> None:
        self.edge_up[node] = False
        down_s = self.s.replace_s if self.s.spare_edges else self.s.edge.mttr_s
        self.push(self.t + self.rng.exponential(down_s), "erepair", node)
        slot, self.slot_of[node] = self.slot_of[node], -1
        if slot >= 0:
            self.slot_live[slot] = False
            self.slot_version[slot] += 1
            self._rehome(slot)

    def _rehome(self, slot: int) -> None:
        spare = next((n for n, (up, s) in enumerate(zip(self.edge_up, self.slot_of, strict=True))
                      if up and s < 0), None)  # fmt: skip
        if spare is None:
            self.orphans.append(slot)
            return
        self._assign(spare, slot, self.s.edge_failover_s)

    def _assign(self, node: int, slot: int, after_s: float) -> None:
        self.slot_of[node] = slot
        self.push(self.t + after_s, "erestore", slot, self.slot_version[slot])

    def erepair(self, node: int, _v: int) -> None:
        self.edge_up[node] = True
        self.push(self.t + self.rng.exponential(self.s.edge.mtbf_s), "efail", node)
        if self.orphans:
            self._assign(
                node, self.orphans.pop(0), self.s.edge_failover_s if self.s.spare_edges else 0.0
            )

    def erestore(self, slot: int, version: int) -> None:
        if version == self.slot_version[slot]:
            self.slot_live[slot] = True
            self.rehomes += 1

    # clients -------------------------------------------------------------------
    def kfail(self, node: int, _v: int) -> None:
        self.up_in_slot[node // self.s.clients_per_edge] -= 1
        self.push(self.t + self.rng.exponential(self.s.client.mttr_s), "krepair", node)

    def krepair(self, node: int, _v: int) -> None:
        self.up_in_slot[node // self.s.clients_per_edge] += 1
        self.push(self.t + self.rng.exponential(self.s.client.mtbf_s), "kfail", node)


def simulate(spec: SoakSpec, rng: np.random.Generator) -> SoakReport:
    """Run the fault process for ``spec.horizon_s`` simulated seconds."""
    sim = _Sim(spec, rng)
    accepting = center_down = quorum_lost = 0.0
    quorum = spec.quorum
    while sim.heap:
        at, _, what, node, version = heapq.heappop(sim.heap)
        at = min(at, spec.horizon_s)
        span = at - sim.t
        has_center, has_quorum = sim.active >= 0, sim.reachable() >= quorum
        accepting += span * (has_center and has_quorum)
        center_down += span * (not has_center)
        quorum_lost += span * (not has_quorum)
        sim.t = at
        if at >= spec.horizon_s:
            break
        getattr(sim, what)(node, version)
    return SoakReport(
        availability=accepting / spec.horizon_s, center_down_s=center_down,
        quorum_lost_s=quorum_lost, center_failovers=sim.failovers,
        edge_rehomes=sim.rehomes, horizon_s=spec.horizon_s,
    )  # fmt: skip


def compare(spec: SoakSpec, seed: int) -> tuple[SoakReport, SoakReport]:
    """(with the standbys of ``spec``, without any), each from generator ``seed``."""
    with_standby = simulate(spec, np.random.default_rng(seed))
    alone = simulate(spec.without_standby(), np.random.default_rng(seed))
    return with_standby, alone
