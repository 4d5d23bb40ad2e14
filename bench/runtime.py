"""Runtime benchmark: a center and many asyncio clients over gRPC on loopback.

Part 1: 1 center + N clients (200; ``--quick``: 100) in a few client processes, a
~1M-parameter MLP on digits, one local step. Reports the round wall time, the gRPC
message bytes the center received and sent (``wire_bytes``: serialized messages plus
their 5-byte gRPC prefix; below that, HTTP/2, TLS and TCP framing are not counted)
against the simulator's count for the same rounds (``bytes_up + bytes_down``), the
center's throughput (accepted updates per second of round time) and its peak RSS.

Part 2: a ~100 MB model, 2 clients, 1 round, streamed in 2 MiB chunks (above the
center's ``stream_min_bytes``: float32 sum, uploads folded chunk by chunk, in-place
apply). ``big_model_center_peak_over_model`` is the center process's peak RSS growth
above its resident size once the initial model is loaded (just before ``center.run``),
over the model's float32 size. The peak is ``ru_maxrss`` at the end when the run set a
new high-water mark (exact), else the maximum of 2 ms psutil samples during the run.
The center runs in its own process, so no other memory counts.

Usage: ``python bench/runtime.py [--quick]``; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import socket
import threading
import time
from typing import Any

BASE = [
    "output.run_store=false",
    "sim.workers=0",
    "model.kind=mlp",
    "client.steps=1",
    "client.epochs=null",
    "client.batch_size=16",
    "rounds.clients_per_round=null",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Sampler:
    """Samples this process's current RSS every 2 ms in a thread; keeps the maximum."""

    def __init__(self) -> None:
        import psutil

        self._proc, self._stop = psutil.Process(), threading.Event()
        self.now_mb = self._proc.memory_info().rss / 2**20
        self.max_mb = self.now_mb
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.002):
            self.max_mb = max(self.max_mb, self._proc.memory_info().rss / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.max_mb


class _Locked:
    """One trainer shared by a process's asyncio clients (training serialized)."""

    def __init__(self, trainer: Any) -> None:
        self._t, self._lock = trainer, threading.Lock()
        self.spec = trainer.spec

    def train(self, *args: Any) -> Any:
        with self._lock:
            return self._t.train(*args)


def _clients_main(overrides: list[str], cids: list[int], port: int, chunk: int) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import ChunkPlan, GrpcLink, deployment
    from fedstrata.runtime.center import dense_update_limit

    dep = deployment(load_config(overrides=overrides))
    trainer = _Locked(dep.trainer)
    chunks = ChunkPlan(chunk, dense_update_limit(dep.size))

    async def one(cid: int) -> None:
        async with GrpcLink(f"127.0.0.1:{port}", cid, str(cid), chunks=chunks) as link:
            await dep.client(link, cid, trainer).run()  # type: ignore[arg-type]

    async def main() -> None:
        await asyncio.gather(*(one(c) for c in cids))

    asyncio.run(main())


def _center_main(overrides: list[str], port: int, chunk: int, out: Any) -> None:
    from fedstrata.config import load_config
    from fedstrata.runtime import CenterServer, TokenTable, deployment

    dep = deployment(load_config(overrides=overrides))
    n = dep.num_clients
    center = dep.center(chunk_bytes=chunk)
    params = dep.initial_params()

    async def main() -> dict[str, Any]:
        tokens = TokenTable({c: str(c) for c in range(n)})
        async with CenterServer(center, tokens, address=f"127.0.0.1:{port}") as server:
            await center.wait_for_clients(n)
            ru_base, sampler, t0 = _rss_mb(), _Sampler(), time.perf_counter()
            result = await center.run(params)
            wall = time.perf_counter() - t0
            sampled, ru_end = sampler.stop(), _rss_mb()
            peak = ru_end if ru_end > ru_base else sampled
            return {
                "wall_s": wall,
                "wire": server.counter.total,
                "payload": result.wire_bytes,
                "accepted": sum(len(r.outcome.accepted) for r in result.rounds),
                "rounds": len(result.rounds),
                "base_rss_mb": sampler.now_mb,
                "peak_rss_mb": peak,
                "center_peak_rss_mb": ru_end,
                "model_mb": 4 * dep.size / 2**20,
            }

    out.put(asyncio.run(main()))


def _deploy(overrides: list[str], procs: int, chunk: int = 2 << 20) -> dict[str, Any]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "fedstrata.runtime", "fedstrata.torch_adapter"])
    from fedstrata.config import load_config

    n = load_config(overrides=overrides).data.num_clients
    port, out = _free_port(), ctx.Queue()
    children = [ctx.Process(target=_center_main, args=(overrides, port, chunk, out))]
    for k in range(procs):
        cids = list(range(k, n, procs))
        children.append(ctx.Process(target=_clients_main, args=(overrides, cids, port, chunk)))
    for p in children:
        p.start()
    try:
        return dict(out.get(timeout=600))
    finally:
        for p in children:
            p.join(30)
            if p.is_alive():
                p.kill()


def _sim_bytes(overrides: list[str]) -> int:
    from fedstrata.api import run
    from fedstrata.config import load_config

    sim = run(load_config(overrides=overrides)).simulation
    return sum(r.bytes_up + r.bytes_down for r in sim.rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    clients, rounds = (100, 1) if args.quick else (200, 2)
    cfg = [*BASE, f"data.num_clients={clients}", f"rounds.rounds={rounds}", "model.hidden=13400"]
    run = _deploy(cfg, procs=2)
    sim = _sim_bytes(cfg)
    big = _deploy([*BASE, "data.num_clients=2", "rounds.rounds=1", "model.hidden=350000"], 1)
    grow = big["peak_rss_mb"] - big["base_rss_mb"]
    report = {
        "clients": clients,
        "rounds": rounds,
        "model_mb": round(run["model_mb"], 2),
        "round_wall_s": round(run["wall_s"] / run["rounds"], 3),
        "wire_bytes": run["wire"],
        "payload_bytes": run["payload"],
        "sim_bytes": sim,
        "wire_vs_sim_rel_error": round(abs(run["wire"] - sim) / sim, 5),
        "center_peak_rss_mb": round(run["center_peak_rss_mb"], 1),
        "updates_per_s": round(run["accepted"] / run["wall_s"], 1),
        "big_model_mb": round(big["model_mb"], 1),
        "big_model_center_peak_growth_mb": round(grow, 1),
        "big_model_center_peak_over_model": round(grow / big["model_mb"], 2),
    }
    for key, value in report.items():
        print(f"{key:>34}  {value}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
