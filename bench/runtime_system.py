"""Issue 13 benchmark: the private, secure deployment as real processes vs the simulator.

A center, 4 edge aggregators and 40 clients (10 client processes of 4 clients; each
client dials its own edge, clients 10k..10k+9 under edge k) on loopback with mutual
TLS (development PKI), the all-on configuration: two-tier secure aggregation (device
masks cancel at the edges, cluster masks at the center), distributed DP at ε = 2
(staged allocator, noise shares in the ring), random-k 5 % + 8-bit stochastic
quantization (secure-aggregation-compatible compression), downlink compression (int8
deltas since each client's version, relayed by the edges) and deadline scheduling
with allocation (``rounds.deadline_s`` 20 s, steps sized by each edge's scheduler
from the clients' measured device profiles and round timings, at most 2;
``scheduling.skip_infeasible: false``, which distributed DP's fixed-size cohort
needs). The simulator runs the same configuration on the deployment's tree
(``topology.edges``: the 4 edges under the center, no region tier).

Runs, side by side on one loaded machine:

* ``secure``: no kills; its model and ε against the simulator's. Allocation decides
  each client's steps from predicted seconds, measured in the runtime and simulated
  in the simulator, and a deployed client stops at the deadline by its real clock
  (partial work, settled by the center), so a free-running simulation gives some
  clients other steps and its model differs (``max_abs_diff_free`` with its
  ``reason``, ``mean_steps_runtime`` / ``mean_steps_sim``). The exact comparison:
  the edges' schedulers record every client's assigned and completed steps in the
  deployment's device registry (``round_history``), and the simulator replays those
  decisions (``scheduling.replay_url``, :mod:`fedstrata.sim.replay`):
  ``model_equal_to_sim`` is the replay's model against the deployment's, bit for bit
  (``max_abs_diff`` 0 when equal). Wire: gRPC message
  bytes at the center and the four edges (both directions, 5-byte prefix included),
  split into the data itself (``wire_runtime_payload_bytes``: model and downlink
  chunks, updates, masked inputs, partials, every secure-aggregation step and the
  center's answers to steps, without framing), the messages carrying it
  (``wire_runtime_data_bytes``: with their protobuf and gRPC framing) and control
  (sessions and tasks, download requests, stream headers, plain replies);
  ``wire_vs_sim_rel_error`` compares the payload with the simulator's
  ``bytes_up + bytes_down`` (its accounting of the same messages, no framing);
  ``wire_data_vs_sim_rel_error`` and ``wire_total_vs_sim_rel_error`` the framed
  messages and everything;
* ``killed``: the secure run with one of the 10 client processes (10 %: clients 0-3,
  edge 0) SIGKILLed once it downloaded round 1's model: rounds completed, ε, center RSS;
* ``plain``: the same processes, compression, downlink and scheduling without secure
  aggregation and DP; ``secagg_added_wall_s_per_round`` = median round wall (rounds
  1+) secure - plain.

Usage: ``python bench/runtime_system.py [--quick]``; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing as mp
import os
import queue
import resource
import signal
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

N, EDGES, PER_PROC = 40, 4, 4
DEADLINE_S = 20.0
BASE = [
    "output.run_store=false", "output.report=false", "output.progress=false",
    "sim.workers=0", f"data.num_clients={N}", "data.partition=iid", "model.kind=logreg",
    "client.steps=2", "client.epochs=null", "rounds.clients_per_round=null",
    "evaluation.every=0", "compression.sparsify=randk", "compression.density=0.05",
    "compression.quantize=8", "compression.stochastic=true",
]  # fmt: skip
PRIVATE = [
    "secagg.enabled=true", "secagg.dropout_rate=0.15", "privacy.mechanism=distributed",
    "privacy.epsilon=2", "privacy.delta=1e-5", "privacy.schedule=staged",
    "privacy.clip_norm=0.5",
]  # fmt: skip
SYSTEM = [
    "downlink.preset=int8", "scheduling.allocation=true", "scheduling.skip_infeasible=false",
    "scheduling.max_steps=2", f"rounds.deadline_s={DEADLINE_S}",
]  # fmt: skip
LIMIT_S = 300.0
REASON = (
    "free-running, deadline allocation sizes each client's steps from predicted "
    "seconds: measured devices and real round timings in the runtime, simulated "
    "devices and simulated timings in the simulator, and deployed clients stop at the "
    "deadline by their real clocks; a client given 1 step instead of 2 (mean_steps_*) "
    "changes the model. Replaying the deployment's recorded steps (scheduling.replay_url) "
    "the simulator computes the deployment's model (model_equal_to_sim)"
)


def _overrides(rounds: int, private: bool) -> list[str]:
    return [*BASE, *SYSTEM, f"rounds.rounds={rounds}", *(PRIVATE if private else [])]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _center(over: list[str], port: int, tokens: dict[int, str], pki: Any, out: Any) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import CenterServer, TokenTable, deployment

    dep = deployment(load_config(overrides=over))
    center = dep.center(participants=EDGES)
    stamps: list[float] = []

    async def main() -> tuple[Any, int]:
        async with CenterServer(
            center, TokenTable(tokens), address=f"127.0.0.1:{port}", tls=pki.server, mutual=True
        ) as server:
            stamps.append(time.perf_counter())
            result = await center.run(
                dep.initial_params(), lambda *_: stamps.append(time.perf_counter())
            )
            c = server.counter
            return result, (c.total, c.data, c.payload)

    result, wire = asyncio.run(main())
    eps = [r.privacy.epsilon_spent if r.privacy else None for r in result.rounds]
    walls = [b - a for a, b in itertools.pairwise(stamps[1:])]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(("center", result.params.tobytes(), eps, walls, len(result.rounds), rss, wire))


def _edge(
    over: list[str], k: int, ports: tuple[int, int], keys: tuple[Any, Any], out: Any
) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment

    (top, port), (tokens, pki) = ports, keys
    dep = deployment(load_config(overrides=over))
    edge = dep.edge(N // EDGES)
    tid = N + k

    async def main() -> tuple[int, int, int]:
        async with (
            CenterServer(edge, TokenTable(tokens), address=f"127.0.0.1:{port}", tls=pki.server,
                         mutual=True) as server,
            GrpcLink(f"127.0.0.1:{top}", tid, tokens[tid], tls=pki.client(tid)) as link,
        ):  # fmt: skip
            await dep.tier(link, edge).run()
            c = server.counter
            return c.total, c.data, c.payload

    wire = asyncio.run(main())
    stats = [] if edge.scheduler is None else edge.scheduler.stats
    out.put(("edge", k, wire, [s.mean_steps for s in stats]))


def _clients(over: list[str], cids: list[int], ports: list[int], keys: tuple[Any, Any],
             signal_at: Any) -> None:  # fmt: skip
    from fedstrata.config import load_config
    from fedstrata.errors import FedstrataError
    from fedstrata.runtime import Backoff, GrpcLink, deployment

    tokens, pki = keys
    dep = deployment(load_config(overrides=over))

    class Signal:
        def __init__(self, link: Any) -> None:
            self.link = link

        def __getattr__(self, name: str) -> Any:
            return getattr(self.link, name)

        async def download_downlink(self, round_idx: int, ask: Any) -> Any:
            payload = await self.link.download_downlink(round_idx, ask)
            if round_idx == 1:
                signal_at.set()
            return payload

    async def one(cid: int) -> None:
        target = f"127.0.0.1:{ports[cid * EDGES // N]}"
        async with GrpcLink(target, cid, tokens[cid], tls=pki.client(cid)) as link:
            used = link if signal_at is None else Signal(link)
            try:
                await dep.client(used, cid, backoff=Backoff(2, 0.1, 0.2)).run()  # type: ignore[arg-type]
            except FedstrataError:  # a client of a dead edge gives up
                return

    async def main() -> None:
        await asyncio.gather(*(one(c) for c in cids))

    asyncio.run(main())


def deploy(ctx: Any, over: list[str], kill: bool, folder: Path) -> dict[str, Any]:
    """One deployment as processes; the center's and edges' reports. The edges share
    one device registry (``folder/devices.db``, migrated here first), which records
    each client's assigned and completed steps per round."""
    from fedstrata.runtime import make_dev_pki, new_token
    from fedstrata.scheduling import Registry

    folder.mkdir(parents=True, exist_ok=True)
    registry = folder / "devices.db"
    Registry.open(registry).close()
    over = [*over, f"scheduling.registry_url={registry}"]
    pki = make_dev_pki(folder, range(N + EDGES))
    tokens = {i: new_token() for i in range(N + EDGES)}
    top, ports = _port(), [_port() for _ in range(EDGES)]
    out, started = ctx.Queue(), []
    hit = ctx.Event() if kill else None

    def start(target: Any, *args: Any) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        p.start()
        started.append(p)
        return p

    t0 = time.perf_counter()
    start(_center, over, top, tokens, pki, out)
    for k in range(EDGES):
        start(_edge, over, k, (top, ports[k]), (tokens, pki), out)
    procs = [
        start(_clients, over, list(range(p, p + PER_PROC)), ports, (tokens, pki),
              hit if p == 0 else None)
        for p in range(0, N, PER_PROC)
    ]  # fmt: skip
    if hit is not None:
        if not hit.wait(LIMIT_S):
            raise RuntimeError("the victim never reached round 1")
        os.kill(procs[0].pid, signal.SIGKILL)
    reports = [_next(out, started[: 1 + EDGES]) for _ in range(1 + EDGES)]
    for p in started:
        p.join(30)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    _, params, eps, walls, rounds, rss, wire = next(r for r in reports if r[0] == "center")
    edges = [r[2] for r in reports if r[0] == "edge"]
    steps = [r[3] for r in reports if r[0] == "edge"]
    return {
        "params": params, "eps": eps, "walls": walls, "rounds": rounds, "rss_mb": rss,
        "wire_bytes": wire[0] + sum(e[0] for e in edges),
        "wire_data_bytes": wire[1] + sum(e[1] for e in edges),
        "wire_payload_bytes": wire[2] + sum(e[2] for e in edges), "processes": len(started),
        "client_processes": len(procs), "killed": 1 if kill else 0,
        "mean_steps": [statistics.mean(s) for s in zip(*steps, strict=False)],
        "wall_s": time.perf_counter() - t0, "registry": registry,
    }  # fmt: skip


def _next(out: Any, servers: list[Any]) -> Any:
    """The next report; fails at once when the center or an edge process failed."""
    deadline = time.monotonic() + LIMIT_S
    while time.monotonic() < deadline:
        try:
            return out.get(timeout=1.0)
        except queue.Empty:
            codes = [p.exitcode for p in servers]
            if any(c not in (None, 0) for c in codes):
                raise RuntimeError(f"center/edge exit codes {codes}") from None
    raise RuntimeError(f"no report within {LIMIT_S} s")


def tree_file(folder: Path) -> Path:
    """The deployment's tiers as the simulator's explicit topology: 4 edges under the
    center (``topology.edges``: no region tier, as the deployment)."""
    per = N // EDGES
    lines = ["topology:", "  mode: explicit", "  edges:"]
    for e in range(EDGES):
        ids = ", ".join(str(c) for c in range(e * per, (e + 1) * per))
        lines.append(f"    edge-{e}: [{ids}]")
    path = folder / "tree.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(over: list[str], tree: Path) -> dict[str, Any]:
    """The same configuration in the simulator with the deployment's tree (two-tier
    masks through the same 4 edges; kappa 1: one aggregation per tier)."""
    from fedstrata.api import run
    from fedstrata.config import load_config

    sim = run(load_config(tree, overrides=over)).simulation
    sched = [m.schedule for m in sim.rounds]
    return {
        "partial": sum(s.partial for s in sched if s is not None),
        "dropped": sum(s.dropped for s in sched if s is not None),
        "params": sim.params.tobytes(),
        "eps": [m.privacy.epsilon_spent if m.privacy else None for m in sim.rounds],
        "wire": sum(m.bytes_up + m.bytes_down for m in sim.rounds),
        "mean_steps": [m.schedule.mean_steps if m.schedule else None for m in sim.rounds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds (default: 6)")
    rounds = 3 if parser.parse_args().quick else 6  # >= the 3 privacy stages
    load_at_start = os.getloadavg()[0]  # other jobs on the machine (wall times suffer)
    import numpy as np

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime", "fedstrata.torch_adapter"])
    secure_over = _overrides(rounds, private=True)
    with tempfile.TemporaryDirectory() as tmp:
        plain = deploy(ctx, _overrides(rounds, private=False), False, Path(tmp) / "p")
        secure = deploy(ctx, secure_over, False, Path(tmp) / "s")
        killed = deploy(ctx, secure_over, True, Path(tmp) / "k")
        tree = tree_file(Path(tmp))
        free = simulate(secure_over, tree)
        sim = simulate([*secure_over, f"scheduling.replay_url={secure['registry']}"], tree)
    runtime = np.frombuffer(secure["params"], dtype=np.float32)
    replayed = np.frombuffer(sim["params"], dtype=np.float32)
    free_params = np.frombuffer(free["params"], dtype=np.float32)
    equal = secure["params"] == sim["params"]
    free_equal = secure["params"] == free["params"]
    added = statistics.median(secure["walls"][1:]) - statistics.median(plain["walls"][1:])
    result = {
        "clients": N, "edges": EDGES, "processes": secure["processes"],
        "client_processes": secure["client_processes"], "rounds": rounds,
        "model_equal_to_sim": equal,
        "model_compared": "simulator replaying the deployment's recorded steps",
        "max_abs_diff": float(np.abs(runtime - replayed).max()),
        "model_equal_to_sim_free": free_equal,
        "max_abs_diff_free": float(np.abs(runtime - free_params).max()),
        "reason": None if free_equal else REASON,
        "partial_clients_replayed": sim["partial"], "dropped_clients_replayed": sim["dropped"],
        "eps_runtime": secure["eps"][-1], "eps_sim": sim["eps"][-1],
        "eps_runtime_killed": killed["eps"][-1],
        "wire_runtime_bytes": secure["wire_bytes"],
        "wire_runtime_data_bytes": secure["wire_data_bytes"],
        "wire_runtime_control_bytes": secure["wire_bytes"] - secure["wire_data_bytes"],
        "wire_runtime_payload_bytes": secure["wire_payload_bytes"],
        "wire_sim_bytes": sim["wire"],
        "mean_steps_runtime": secure["mean_steps"], "mean_steps_sim": free["mean_steps"],
        "mean_steps_replay": sim["mean_steps"],
        "wire_vs_sim_rel_error": abs(secure["wire_payload_bytes"] - sim["wire"]) / sim["wire"],
        "wire_data_vs_sim_rel_error": abs(secure["wire_data_bytes"] - sim["wire"]) / sim["wire"],
        "wire_total_vs_sim_rel_error": abs(secure["wire_bytes"] - sim["wire"]) / sim["wire"],
        "secagg_added_wall_s_per_round": added,
        "round_wall_s_secure": statistics.median(secure["walls"][1:]),
        "round_wall_s_plain": statistics.median(plain["walls"][1:]),
        "rounds_completed": killed["rounds"], "killed": killed["killed"],
        "killed_clients": PER_PROC, "center_peak_rss_mb": killed["rss_mb"],
        "bench_wall_s": plain["wall_s"] + secure["wall_s"] + killed["wall_s"],
        "machine": f"{os.cpu_count()} cores, 1-min load average {load_at_start:.2f} at start",
    }  # fmt: skip
    for key, value in result.items():
        print(f"{key:32s} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
