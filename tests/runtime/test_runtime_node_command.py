"""``fedstrata serve center`` with ``failover.enabled``: an active and a standby center
as real processes (the CLI's own code path) on loopback; the active one is SIGKILLed
mid-run, the standby takes over and the clients finish the run with it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rthelpers import SMALL, tokens_for

from fedstrata.checkpoint import open_store
from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.monitoring import RunStore
from fedstrata.monitoring.catalogue import federation_metrics
from fedstrata.monitoring.report import render_report
from fedstrata.runtime import check_supported
from fedstrata.runtime.failover import CenterSnapshot
from fedstrata.runtime.lease import SqlLease

ROUNDS = 6
KILL_AFTER = 1  # SIGKILL the active center once this round is committed


def _cli(argv: list[str], out: str) -> None:
    """A process running ``fedstrata ARGV`` with its output in the file ``out``."""
    from fedstrata.cli import main

    sys.stdout = sys.stderr = open(out, "w", buffering=1)  # noqa: SIM115 (the process's own)
    sys.argv = ["fedstrata", *argv]
    main()


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [int(s.getsockname()[1]) for s in socks]
    for s in socks:
        s.close()
    return ports


def _until(predicate: Any, limit_s: float, what: str) -> None:
    end = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _settings(tmp: Path) -> list[str]:
    return [
        *SMALL, f"rounds.rounds={ROUNDS}", "output.run_store=true", "output.report=false",
        "failover.enabled=true", f"failover.lease_url={tmp / 'lease.sqlite'}",
        "failover.lease_name=fed",
        "failover.lease_s=1.5", "failover.poll_s=0.05", "failover.rejoin_timeout_s=1",
        "failover.linger_s=1", "checkpoint.enabled=true",
        f"checkpoint.object_url={tmp / 'shared'}",
        "checkpoint.object_every=1", "checkpoint.disk_every=1",
    ]  # fmt: skip


@pytest.mark.slow
def test_a_standby_serve_center_takes_over_a_killed_one_and_the_run_completes(tmp_path, processes):
    ctx, started = processes
    sets = [a for item in _settings(tmp_path) for a in ("--set", item)]
    tokens = tokens_for(6)
    (tmp_path / "tokens.json").write_text(json.dumps({str(k): v for k, v in tokens.items()}))
    pa, pb = _ports(2)

    def start(args: list[str], name: str) -> Any:
        p = ctx.Process(target=_cli, args=(args, str(tmp_path / f"{name}.log")), daemon=True)
        p.start()
        started.append(p)
        return p

    def center(node: str, port: int) -> Any:
        args = ["serve", "center", *sets, "--address", f"127.0.0.1:{port}", "--node", node,
                "--tokens", str(tmp_path / "tokens.json"), "--start-timeout", "30",
                "--output", str(tmp_path / f"runs_{node}")]  # fmt: skip
        return start(args, node)

    lease = SqlLease(str(tmp_path / "lease.sqlite"), "fed", "observer")
    active = center("a", pa)
    _until(lambda: (row := lease.read()) is not None and row.holder == "a", 60, "a's lease")
    standby = center("b", pb)
    clients = []
    for cid, token in tokens.items():
        path = tmp_path / f"token{cid}"
        path.write_text(token)
        path.chmod(0o600)
        args = ["client", *sets, "--server", f"127.0.0.1:{pa},127.0.0.1:{pb}",
                "--client-id", str(cid), "--token-file", str(path), "--retries", "10"]  # fmt: skip
        clients.append(start(args, f"client{cid}"))

    shared = open_store(str(tmp_path / "shared"))
    _until(lambda: max((i.round for i in shared.list()), default=-1) >= KILL_AFTER, 60, "round 1")
    os.kill(active.pid, signal.SIGKILL)
    active.join(5)
    standby.join(60)
    for p in clients:
        p.join(30)
    log_b = (tmp_path / "b.log").read_text()
    assert standby.exitcode == 0, log_b
    assert [p.exitcode for p in clients] == [0] * len(clients)
    assert "active (epoch 2; was a)" in log_b
    done = re.search(r"finished (\d+) rounds from round (\d+) as epoch 2", log_b)
    assert done is not None, log_b
    served, first = int(done[1]), int(done[2])
    assert first > KILL_AFTER
    assert served + first == ROUNDS
    final = CenterSnapshot.from_bytes(shared.load(max(i.round for i in shared.list())))
    assert final.round_idx == ROUNDS - 1
    assert final.epoch == 2
    assert {h.round_idx for h in final.history} == set(range(ROUNDS))
    # the standby's run directory holds the rounds it served, its own disk tier too
    (run_b,) = (tmp_path / "runs_b").iterdir()
    assert (run_b / "summary.json").is_file()
    assert json.loads((run_b / "summary.json").read_text())["status"] == "completed"
    assert any((run_b / "checkpoints").iterdir())
    _check_resilience(tmp_path, run_b, first)


def _check_resilience(tmp: Path, run_b: Path, first: int) -> None:
    """Part 6: each center's rounds carry their commit and tier save times; the
    standby's first round the failover, its recovery and its checkpoint load, and the
    catalogue's recovery time is the center's."""
    (run_a,) = (tmp / "runs_a").iterdir()
    with RunStore.open(run_a) as store:
        before = store.rounds()
    with RunStore.open(run_b) as store:
        after = store.rounds()
    assert [m.round_idx for m in after] == list(range(first, ROUNDS))
    for m in (*before, *after):
        r = m.resilience
        assert r is not None
        assert r.ckpt_critical_s is not None
        assert r.ckpt_critical_s > 0
        assert r.ckpt_object_s is not None  # written (and flushed) every round
        assert r.ckpt_disk_s is not None
        assert r.ckpt_memory_s is not None
        assert r.ckpt_critical_s >= r.ckpt_object_s  # the commit waits for the durable tier
    assert [m.resilience.failovers for m in before] == [0] * len(before)
    assert [m.resilience.failovers for m in after] == [1] * len(after)
    resumed = after[0].resilience
    assert resumed.restore_s is not None
    assert resumed.recovery_s is not None
    # the lease lapses after lease_s * (1 + drift) = 1.575 s without a renewal
    assert resumed.recovery_s > 1.5
    assert all(m.resilience.recovery_s is None for m in after[1:])
    assert federation_metrics(after)[0]["recovery_time_s"] == resumed.recovery_s
    with RunStore.open(run_b) as store:
        html = render_report(store)
    assert "center failovers in the run so far: 1" in html
    assert f'<td class="num">{first}</td>' in html  # the failover's row


def _config(tmp: Path, *extra: str) -> Any:
    return load_config(overrides=[*_settings(tmp), *extra])


def test_the_runtime_refuses_checkpoints_it_would_not_honour(tmp_path):
    """A checkpoint is honoured by the center nodes (the DP budget and the secure
    aggregator's record included); without them, and with what their checkpoint does
    not carry (the clients' error-feedback residuals under secure aggregation), it is
    refused."""
    check_supported(_config(tmp_path))
    with pytest.raises(ConfigError, match=r"set failover\.enabled"):
        check_supported(_config(tmp_path, "failover.enabled=false"))
    check_supported(_config(tmp_path, "privacy.mechanism=central"))  # its budget is carried
    check_supported(_config(tmp_path, "secagg.enabled=true"))
    secure_dp = ["secagg.enabled=true", "privacy.mechanism=distributed"]
    check_supported(_config(tmp_path, *secure_dp, "privacy.accountant=rdp"))
    ef = ["compression.preset=int8", "compression.error_feedback=true"]
    with pytest.raises(ConfigError, match="error-feedback residual"):
        check_supported(_config(tmp_path, "secagg.enabled=true", *ef))
    with pytest.raises(ConfigError, match=r"takes effect only with checkpoint\.enabled"):
        check_supported(_config(tmp_path, "checkpoint.enabled=false"))


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["failover.lease_url=null"], "failover.lease_url"),
        (["checkpoint.object_url=null"], "checkpoint.object_url"),
        (["checkpoint.object_every=10"], "object_every=1"),
    ],
)
def test_failover_names_what_it_needs(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, *extra)


def test_a_simulation_refuses_failover(tmp_path):
    from fedstrata.api import run

    with pytest.raises(ConfigError, match=r"deployment runtime's"):
        run(_config(tmp_path))


def test_node_names_a_center_node_and_needs_failover(tmp_path):
    from typer.testing import CliRunner

    from fedstrata.cli import app

    sets = [a for item in SMALL for a in ("--set", item)]
    result = CliRunner().invoke(app, ["serve", "center", *sets, "--node", "a"])
    assert result.exit_code != 0
    assert "--node names a center node: it needs failover.enabled" in result.output
