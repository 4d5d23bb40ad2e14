"""What ``fedstrata serve center`` runs with ``failover.enabled``: one center node.

Every center host runs the same command (its own ``--node`` name and ``--address``).
The node follows the lease (``failover.lease_url``) as a standby; once it holds it,
it opens its run directory (``output.dir``), builds the checkpoint tiers of the
``checkpoint`` section (memory, the run directory's disk tier, and the shared object
tier written every round, which every node resumes from), and serves the rest of the
run as a :class:`~fedstrata.runtime.standby.CenterNode`. Its run directory holds the
rounds it served (a standby that took over records from its first round on).
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

from fedstrata.checkpoint import Checkpointer, checkpointer_from_config
from fedstrata.config import FedConfig
from fedstrata.config.failover import FailoverConfig
from fedstrata.errors import ConfigError
from fedstrata.runtime.build import DEFAULT_START_TIMEOUT_S, deployment
from fedstrata.runtime.lease import LeaseTiming, SqlLease
from fedstrata.runtime.monitor import center_monitoring
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.security import TlsFiles, TokenTable
from fedstrata.runtime.standby import CenterNode, FailoverSettings, NodeOutcome, follow

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

    Returns when the run is complete (``outcome.result`` holds this node's rounds and
    ``run_dir``; ``outcome.completed_before``: it was complete when the node took over).

    Raises:
        ConfigError: ``failover.enabled`` is off, or an unsupported feature.
        LeaseLost: this node lost the lease while serving (a standby took over).
        TransportError: the lease database is unreachable, or ``address`` cannot be bound.
        CheckpointError: a checkpoint could not be written.
    """
    fo = config.failover
    if not fo.enabled or fo.lease_url is None:
        raise ConfigError("run_center_node needs failover.enabled and failover.lease_url")
    dep = deployment(config)
    lease = SqlLease(fo.lease_url, fo.lease_name or config.name, node)
    settings = failover_settings(fo, start_timeout_s)
    log.warning("center %s: standby, following lease %r", node, lease.name)
    taken = await follow(lease, settings)
    recorder = RunRecorder.create(dep)
    sink = _checkpointer(config, recorder)
    center = CenterNode(
        dep, lease=lease, sink=sink, address=address, tokens=tokens, tls=tls, mutual=mutual,
        settings=settings, participants=participants,
    )  # fmt: skip
    center.on_round = None if recorder is None else recorder.on_round
    try:
        with center_monitoring(config, recorder):
            outcome = await center.take_over(taken)
        sink.close()
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    if recorder is not None:
        _finish(recorder, outcome)
    return outcome


def _finish(recorder: RunRecorder, outcome: NodeOutcome) -> None:
    """Close the run directory: the rounds served, or none (then it is removed)."""
    if outcome.result is None:  # the run was complete before this node took over
        recorder.abort()
        shutil.rmtree(recorder.path, ignore_errors=True)
        return
    result = outcome.result
    result.run_dir = recorder.finish(result.params, result.stopped_reason)
