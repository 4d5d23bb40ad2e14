"""Run a federation of OS processes on loopback, kill some of them, time every recovery.

:func:`run_chaos` starts the center nodes (the first becomes active, the others stand
by), the edge aggregators and spare edges, and one process per client
(:mod:`fedstrata.runtime.chaos`), all over mutual TLS. As committed rounds pass (read
from the shared checkpoint store) it SIGKILLs, per :class:`ChaosPlan`, random client
processes, one edge and the active center (whichever holds the lease). It waits for
the run to end and reports (:class:`ChaosResult`):

* ``completed``: the last round was committed;
* ``acked`` / ``acked_lost``: center acknowledgements found in the participants' logs,
  and those missing from the final checkpoint's committed history;
* ``center_failover_s``: SIGKILL of the active center -> the new active center opened
  its first round (the federation accepts updates again);
* ``edge_failover_s``: SIGKILL of an edge -> every surviving client of it is connected
  elsewhere and the spare (if one took them) has registered with the center;
* ``availability``: 1 - (time without an active center accepting updates) / wall time;
* ``deposed``: terms that ended with a live center losing its lease (its renewals came
  late on a loaded host); the node followed again as a standby (not a kill: the run
  goes on, and the kills are still timed from the SIGKILL to the next term's opening).

Processes are forked from a forkserver that preloads torch and the runtime, so each
starts quickly; :class:`Federation` kills any still alive when it exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedstrata.checkpoint import open_store
from fedstrata.config import load_config
from fedstrata.errors import TransportError
from fedstrata.runtime.chaos import AckLog, ChaosSpec, lost_acks
from fedstrata.runtime.chaos_procs import center_main, client_main, edge_main
from fedstrata.runtime.failover import CenterSnapshot
from fedstrata.runtime.lease import SqlLease
from fedstrata.runtime.loader import deployment
from fedstrata.runtime.security import make_dev_pki, new_token

__all__ = ["ChaosPlan", "ChaosResult", "Federation", "run_chaos"]

PRELOAD = ["torch", "sklearn.datasets", "fedstrata.runtime.chaos_procs", "fedstrata.torch_adapter"]


@dataclass(frozen=True)
class ChaosPlan:
    """Whom to kill, after which committed round (kills happen mid-round, ``delay_s``
    after the commit), with which random choice of victims."""

    kill_clients: int = 0
    kill_edge: bool = False
    kill_center: bool = False
    client_round: int = 0
    edge_round: int = 1
    center_round: int = 2
    delay_s: float = 0.05
    seed: int = 0
    limit_s: float = 300.0


@dataclass
class ChaosResult:
    """What a chaos run did; see the module docstring."""

    completed: bool
    rounds: int
    accuracy: float | None
    acked: int
    acked_lost: int
    wall_s: float
    center_failover_s: list[float] = field(default_factory=list)
    edge_failover_s: list[float] = field(default_factory=list)
    killed_clients: list[int] = field(default_factory=list)
    killed_edges: list[int] = field(default_factory=list)
    killed_centers: int = 0
    checkpoint_save_s: list[float] = field(default_factory=list)
    deposed: int = 0

    @property
    def availability(self) -> float:
        return 1.0 - sum(self.center_failover_s) / self.wall_s if self.wall_s > 0 else 0.0


class Federation:
    """The processes of one :class:`ChaosSpec`; kills the survivors on exit."""

    def __init__(self, spec: ChaosSpec) -> None:
        self.spec = spec
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        ids = range(spec.participants)
        self.pki = make_dev_pki(Path(spec.folder) / "pki", ids)
        self.tokens = {i: new_token() for i in ids}
        self.out = self.ctx.Queue()
        self.centers: list[Any] = []
        self.edges: list[Any] = []
        self.clients: dict[int, Any] = {}
        self._store = open_store(str(Path(spec.folder) / "checkpoints"), keep=3)
        self._lease = SqlLease(str(Path(spec.folder) / "registry.sqlite"), "chaos", "observer")

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in [*self.centers, *self.edges, *self.clients.values()]:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(5)
        self._lease.close()

    def _start(self, target: Any, *args: Any) -> Any:
        p = self.ctx.Process(
            target=target, args=(self.spec, *args, self.pki, self.tokens, self.out)
        )
        p.daemon = True
        p.start()
        return p

    def start(self, limit_s: float) -> None:
        """Centers (the first takes the lease), edges and spares, then the clients once
        every edge listens: a client takes the first of its homes that accepts a
        connection, so one started before its edge listened (a slow start on a loaded
        machine) began on the spare or a center, and the edge's death moved nobody."""
        s = self.spec
        self.centers.append(self._start(center_main, 0))
        self._until(lambda: self._lease.read() is not None, limit_s, "no center took the lease")
        self.centers += [self._start(center_main, i) for i in range(1, len(s.centers))]
        self.edges = [self._start(edge_main, k) for k in range(len(s.edges) + len(s.spares))]
        tiers = [*s.edges, *s.spares]
        self._until(lambda: all(map(_listening, tiers)), limit_s, "the edges did not listen")
        self.clients = {cid: self._start(client_main, cid) for cid in range(s.num_clients)}

    @staticmethod
    def _until(ready: Any, limit_s: float, why: str) -> None:
        end = time.monotonic() + limit_s
        while not ready():
            if time.monotonic() > end:
                raise TransportError(f"chaos: {why} within {limit_s:g} s")
            time.sleep(0.01)

    def committed(self) -> int:
        """The newest committed round (-1: none)."""
        return max((info.round for info in self._store.list()), default=-1)

    def wait_round(self, round_idx: int, limit_s: float) -> None:
        self._until(
            lambda: self.committed() >= round_idx, limit_s, f"round {round_idx} not committed"
        )

    def active_center(self) -> int:
        row = self._lease.read()
        if row is None or row.free:
            raise TransportError("chaos: no center holds the lease")
        return int(row.holder.rsplit("-", 1)[1])

    @staticmethod
    def kill(process: Any) -> float:
        """SIGKILL; returns when (``time.monotonic()``)."""
        at = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        return at

    def final(self) -> CenterSnapshot | None:
        found = self._store.latest()
        return None if found is None else CenterSnapshot.from_bytes(found[1])

    def collect(self, limit_s: float) -> list[tuple[Any, ...]]:
        """The outcomes of the clients and centers, once they exited (at most
        ``limit_s``); edges report if they are done (an idle spare never is)."""
        got: list[tuple[Any, ...]] = []
        end = time.monotonic() + limit_s
        procs = [*self.clients.values(), *self.centers]
        while any(p.is_alive() for p in procs) and time.monotonic() < end:
            with contextlib.suppress(queue.Empty):
                got.append(self.out.get(timeout=0.1))
        while True:
            try:
                got.append(self.out.get(timeout=0.2))
            except queue.Empty:
                return got


def _listening(address: str) -> bool:
    """Whether ``host:port`` accepts a TCP connection now."""
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    return True


def run_chaos(spec: ChaosSpec, plan: ChaosPlan) -> ChaosResult:
    """Run ``spec`` under ``plan``; see the module docstring."""
    rng = np.random.default_rng(plan.seed)
    rounds = load_config(overrides=list(spec.overrides)).rounds.rounds
    with Federation(spec) as fed:
        start = time.monotonic()
        fed.start(plan.limit_s)
        kills = _inflict(fed, plan, rng)
        fed.wait_round(rounds - 1, plan.limit_s)
        wall_s = time.monotonic() - start
        msgs = fed.collect(60.0)
        final = fed.final()
    return _result(spec, rounds, final, msgs, kills, wall_s)


@dataclass
class _Kills:
    clients: dict[int, float] = field(default_factory=dict)
    edges: dict[int, float] = field(default_factory=dict)
    centers: list[float] = field(default_factory=list)


def _inflict(fed: Federation, plan: ChaosPlan, rng: np.random.Generator) -> _Kills:
    kills = _Kills()
    steps = sorted(
        [(plan.client_round, "clients")] * (plan.kill_clients > 0)
        + [(plan.edge_round, "edge")] * (plan.kill_edge and bool(fed.spec.edges))
        + [(plan.center_round, "center")] * plan.kill_center
    )
    for round_idx, what in steps:
        fed.wait_round(round_idx, plan.limit_s)
        time.sleep(plan.delay_s)  # usually mid-round (the next round open); any moment will do
        if what == "clients":
            victims = rng.choice(sorted(fed.clients), size=plan.kill_clients, replace=False)
            for cid in sorted(int(v) for v in victims):
                kills.clients[cid] = fed.kill(fed.clients[cid])
        elif what == "edge":
            k = int(rng.integers(len(fed.spec.edges)))
            kills.edges[k] = fed.kill(fed.edges[k])
        else:
            kills.centers.append(fed.kill(fed.centers[fed.active_center()]))
    return kills


def _result(  # noqa: PLR0917
    spec: ChaosSpec,
    rounds: int,
    final: CenterSnapshot | None,
    msgs: list[tuple[Any, ...]],
    kills: _Kills,
    wall_s: float,
) -> ChaosResult:
    acks, sessions = _logs(Path(spec.folder))
    center_acks = [a for a in acks if a.target in spec.centers]
    history = () if final is None else final.history
    completed = final is not None and final.round_idx == rounds - 1
    result = ChaosResult(
        completed=completed, rounds=rounds, accuracy=_accuracy(spec, final),
        acked=len(center_acks), acked_lost=len(lost_acks(center_acks, history)), wall_s=wall_s,
        killed_clients=sorted(kills.clients), killed_edges=sorted(kills.edges),
        killed_centers=len(kills.centers),
    )  # fmt: skip
    centers = [m for m in msgs if m[0] == "center" and m[4] is not None and not m[5]]
    for at in kills.centers:
        after = [m[4] for m in centers if m[4] > at]
        if after:
            result.center_failover_s.append(min(after) - at)
    for m in msgs:
        if m[0] == "center":
            result.checkpoint_save_s += list(m[6])
            result.deposed += int(m[7])
    result.edge_failover_s = _edge_recoveries(spec, kills, msgs, sessions)
    return result


def _logs(folder: Path) -> tuple[list[Any], list[tuple[int, float, str]]]:
    acks, sessions = [], []
    for path in sorted(folder.glob("acks-*.jsonl")):
        a, s = AckLog.read(path)
        acks += a
        sessions += s
    return acks, sessions


def _edge_recoveries(
    spec: ChaosSpec, kills: _Kills, msgs: list[tuple[Any, ...]], sessions: list[Any]
) -> list[float]:
    """Per killed edge: until its last surviving client connected elsewhere and the
    spare it went to (if any) registered with the center."""
    switches = {m[1]: m[2] for m in msgs if m[0] == "client"}
    out = []
    for k, at in kills.edges.items():
        orphans = [c for c in spec.groups[k] if c not in kills.clients and c in switches]
        moved = [min((t for t, _ in switches[c] if t > at), default=None) for c in orphans]
        if not moved or any(t is None for t in moved):
            continue
        done = max(t for t in moved if t is not None)
        spares = {spec.tier_id(len(spec.edges) + j) for j in range(len(spec.spares))}
        registered = [t for p, t, _ in sessions if p in spares and t > at]
        if registered:
            done = max(done, min(registered))
        out.append(done - at)
    return out


def _accuracy(spec: ChaosSpec, final: CenterSnapshot | None) -> float | None:
    """The final model's accuracy on the configuration's test set."""
    if final is None:
        return None
    dep = deployment(load_config(overrides=list(spec.overrides)))
    test = None if dep.test_data is None else dep.test_data()
    return None if test is None else float(dep.trainer.evaluate(final.params, test).accuracy)
