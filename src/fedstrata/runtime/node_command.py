"""What ``fedstrata serve center`` runs with ``failover.enabled``: one center node.

Every center host runs the same command (its own ``--node`` name and ``--address``).
The node follows the lease (``failover.lease_url``) as a standby; once it holds it,
it opens its run directory (``output.dir``), builds the checkpoint tiers of the
``checkpoint`` section (memory, the run directory's disk tier, and the shared object
tier written every round, which every node resumes from), and serves the rest of the
run as a :class:`~fedstrata.runtime.standby.CenterNode`. Its run directory holds the
rounds it served (a standby that took over records from its first round on).

A node that loses the lease while serving (deposed: its renewals came late) does what
:meth:`CenterNode.run <fedstrata.runtime.standby.CenterNode.run>` does: it stops
serving, closes that term's run directory as interrupted (its rounds kept: never
removed), and follows again as a standby; a later term opens a run directory of its
own. The command ends when a term of this node ends the run, or when it takes the
lease of a run already complete (that term's empty directory is removed, no other).
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

from fedstrata.checkpoint import Checkpointer, checkpointer_from_config
from fedstrata.config import FedConfig
from fedstrata.config.failover import FailoverConfig
from fedstrata.errors import ConfigError, FedstrataError
from fedstrata.runtime.build import DEFAULT_START_TIMEOUT_S
from fedstrata.runtime.lease import LeaseLost, LeaseTiming, SqlLease
from fedstrata.runtime.loader import deployment
from fedstrata.runtime.monitor import center_monitoring
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.security import TlsFiles, TokenTable
from fedstrata.runtime.standby import CenterNode, FailoverSettings, NodeOutcome, Takeover, follow

__all__ = ["default_node_name", "failover_settings", "run_center_node"]

log = logging.getLogger(__name__)


def default_node_name(address: str) -> str:
    """This node's name in the lease when ``--node`` is not given: ``host/address``."""
    return f"{socket.gethostname()}/{address}"


def failover_settings(fo: FailoverConfig, start_timeout_s: float | None) -> FailoverSettings:
    """The node's timing from the ``failover`` section.

    Raises:
        ConfigError: a lease timing outside its bounds.
    """
    return FailoverSettings(
        lease=LeaseTiming(lease_s=fo.lease_s, drift=fo.drift),
        poll_s=fo.poll_s,
        start_timeout_s=DEFAULT_START_TIMEOUT_S if start_timeout_s is None else start_timeout_s,
        rejoin_timeout_s=fo.rejoin_timeout_s,
        linger_s=fo.linger_s,
    )


def _checkpointer(config: FedConfig, recorder: RunRecorder | None) -> Checkpointer:
    """The tiers of ``config.checkpoint``; without a run directory, no disk tier."""
    if recorder is not None:
        return checkpointer_from_config(config.checkpoint, recorder.path)
    ckpt = config.checkpoint.model_copy(update={"disk_every": 0})
    return checkpointer_from_config(ckpt, Path(config.name))


async def run_center_node(
    config: FedConfig,
    *,
    node: str,
    address: str,
    tokens: TokenTable,
    tls: TlsFiles | None,
    mutual: bool,
    participants: int | None = None,
    start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
) -> NodeOutcome:
    """Follow the lease as ``node``, then serve the rest of the run (module docstring).

    Returns when the run is complete (``outcome``: this node's last term;
    ``outcome.result`` holds its rounds and ``run_dir``; ``outcome.completed_before``:
    it was complete when the node took over). A term that loses the lease is followed
    by following again (module docstring); every term is in the returned node's
    ``terms`` (:attr:`NodeOutcome.deposed` marks the lost ones).

    Raises:
        ConfigError: ``failover.enabled`` is off, or an unsupported feature.
        TransportError: the lease database is unreachable, or ``address`` cannot be bound.
        CheckpointError: a checkpoint could not be written.
    """
    fo = config.failover
    if not fo.enabled or fo.lease_url is None:
        raise ConfigError("run_center_node needs failover.enabled and failover.lease_url")
    dep = deployment(config)
    lease = SqlLease(fo.lease_url, fo.lease_name or config.name, node)
    settings = failover_settings(fo, start_timeout_s)
    center: CenterNode | None = None
    while True:
        log.warning("center %s: standby, following lease %r", node, lease.name)
        taken = await follow(lease, settings)
        recorder = RunRecorder.create(dep)
        sink = _checkpointer(config, recorder)
        if center is None:
            center = CenterNode(
                dep, lease=lease, sink=sink, address=address, tokens=tokens, tls=tls,
                mutual=mutual, settings=settings, participants=participants,
            )  # fmt: skip
        center.sink = sink
        center.on_round = None if recorder is None else recorder.on_round
        try:
            outcome = await _term(center, taken, config, recorder, sink)
        except LeaseLost as exc:
            center.terms[-1].deposed = True
            log.warning(
                "center %s: deposed in epoch %d (%s); following again as a standby",
                node, taken.epoch, exc,
            )  # fmt: skip
            continue
        if recorder is not None:
            _finish(recorder, outcome)
        return outcome


async def _term(
    center: CenterNode,
    taken: Takeover,
    config: FedConfig,
    recorder: RunRecorder | None,
    sink: Checkpointer,
) -> NodeOutcome:
    """One term of ``center`` (the lease ``taken``) with its run directory and
    checkpoint tiers. A term that loses the lease closes its tiers (nothing is queued:
    every commit was flushed before it was acknowledged) and its run directory, kept as
    an interrupted run with the rounds it served.

    Raises:
        LeaseLost: the term lost the lease (the caller follows again).
    """
    try:
        with center_monitoring(config, recorder):
            outcome = await center.take_over(taken)
    except LeaseLost:
        _close_quietly(sink)
        if recorder is not None:
            recorder.abort()
            log.warning("center: the run directory %s keeps the rounds of the lost term",
                        recorder.path)  # fmt: skip
        raise
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    sink.close()
    return outcome


def _close_quietly(sink: Checkpointer) -> None:
    """Stop a deposed term's checkpoint tiers; a failure is logged (the next term opens
    tiers of its own)."""
    try:
        sink.close()
    except FedstrataError as exc:
        log.warning("center: closing the lost term's checkpoint tiers: %s", exc)


def _finish(recorder: RunRecorder, outcome: NodeOutcome) -> None:
    """Close the last term's run directory: the rounds served, or none (then it is
    removed: it is this term's own, opened when it took the lease; the directories of
    earlier, lost terms are closed already and never touched here)."""
    if outcome.result is None:  # the run was complete before this node took over
        recorder.abort()
        shutil.rmtree(recorder.path, ignore_errors=True)
        return
    result = outcome.result
    result.run_dir = recorder.finish(result.params, result.stopped_reason)
