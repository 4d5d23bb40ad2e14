"""What ``fedstrata serve center``, ``serve aggregator``, ``client`` and ``pki`` run."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from fedstrata.config import FedConfig
from fedstrata.errors import ConfigError, TransportError
from fedstrata.runtime.build import DEFAULT_BACKOFF, DEFAULT_START_TIMEOUT_S
from fedstrata.runtime.center import RuntimeResult
from fedstrata.runtime.client_link import Backoff, ClientReport
from fedstrata.runtime.link import GrpcLink
from fedstrata.runtime.loader import deployment
from fedstrata.runtime.monitor import center_monitoring, tier_monitoring
from fedstrata.runtime.parent_link import Reconnect, TierReport
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.relink import FailoverLink, NoTargetError
from fedstrata.runtime.security import TlsFiles, TokenTable, make_dev_pki, new_token
from fedstrata.runtime.wire import CenterServer

__all__ = [
    "load_tokens",
    "parents",
    "run_aggregator",
    "run_center",
    "run_client",
    "write_dev_credentials",
]

log = logging.getLogger(__name__)


def load_tokens(path: Path) -> TokenTable:
    """Read ``{"<client id>": "<token>", ...}``.

    Raises:
        ConfigError: unreadable file, not an object of id -> token strings.
    """
    try:
        raw = json.loads(path.read_text())
        return TokenTable({int(k): str(v) for k, v in raw.items()})
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"tokens file {path}: expected {{client id: token}} JSON ({exc})"
        ) from None


def write_dev_credentials(folder: Path, num_clients: int, hosts: Sequence[str] = ()) -> Path:
    """A development CA, server and client certificates, and ``tokens.json``.

    ``hosts``: names (DNS or IP) the server certificate is valid for besides localhost.

    Raises:
        ConfigError: a host that is neither a DNS name nor an IP address.
    """
    make_dev_pki(folder, range(num_clients), hosts=hosts)
    tokens = {str(c): new_token() for c in range(num_clients)}
    path = folder / "tokens.json"
    path.write_text(json.dumps(tokens, indent=1))
    path.chmod(0o600)
    return path


async def run_center(
    config: FedConfig,
    *,
    address: str,
    tokens: TokenTable,
    tls: TlsFiles | None,
    mutual: bool,
    participants: int | None = None,
    start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
) -> RuntimeResult:
    """Serve the federation until its last round; returns the final model and rounds.

    Writes the run directory (``output.dir``; see :class:`RunRecorder`) as rounds
    complete. ``participants``: the number of aggregator tiers that connect instead of
    clients. Rounds start once ``rounds.min_clients`` clients are reachable; the first
    waits at most ``start_timeout_s`` for every participant. With a task, the center
    reads no client data: the task's model factory gives the parameter layout and the
    initial weights.
    """
    dep = deployment(config)
    center = dep.center(participants=participants, start_timeout_s=start_timeout_s)
    recorder = RunRecorder.create(dep)
    on_round = None if recorder is None else recorder.on_round
    try:
        with center_monitoring(config, recorder):
            async with CenterServer(
                center, tokens, address=address, tls=tls, mutual=mutual
            ) as server:
                log.warning("center listening on %s (run %s)", server.target, center.run_id)
                result = await center.run(dep.initial_params(), on_round)
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    if recorder is not None:
        result.run_dir = recorder.finish(result.params, result.stopped_reason)
    return result


async def run_client(
    config: FedConfig,
    *,
    server: str,
    client_id: int,
    token: str,
    tls: TlsFiles | None,
    backoff: Backoff = DEFAULT_BACKOFF,
    connect_timeout_s: float = 20.0,
    data_dir: Path | None = None,
) -> ClientReport:
    """Take part in the federation as ``client_id`` until the center finishes.

    With a task, the client trains on its own data: ``task.local_data(data_dir)``,
    else ``task.client_data(client_id)``, loaded before its session starts.
    ``server``: ``host:port``, or several comma-separated (:func:`parents`): the first
    that serves is used (:class:`~fedstrata.runtime.relink.FailoverLink`).

    Raises:
        TransportError: the server stayed unreachable through ``backoff``'s attempts
            (each waits at most ``connect_timeout_s`` for the connection).
        ProtocolError: the server refused this client.
    """
    dep = deployment(config, data_dir=data_dir)
    targets = parents(server)

    def make(target: str) -> GrpcLink:
        return GrpcLink(target, client_id, token, tls=tls, connect_timeout_s=connect_timeout_s)

    if len(targets) == 1:
        async with make(targets[0]) as link:
            return await dep.client(link, client_id, backoff=backoff).run()
    async with FailoverLink(targets, make, connect_timeout_s=connect_timeout_s) as any_link:
        return await dep.client(any_link, client_id, backoff=backoff).run()


def parents(spec: str) -> list[str]:
    """``host:port`` targets of a comma-separated list (the active center and its
    standbys, or an edge, its spares and its parent), in order of preference.

    Raises:
        ConfigError: an empty list.
    """
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    if not targets:
        raise ConfigError(f"expected host:port[,host:port...], got {spec!r}")
    return targets


async def run_aggregator(
    config: FedConfig,
    *,
    parent: str,
    tier_id: int,
    token: str,
    parent_tls: TlsFiles | None,
    clients: int,
    address: str,
    tokens: TokenTable,
    tls: TlsFiles | None,
    mutual: bool,
    start_timeout_s: float | None = DEFAULT_START_TIMEOUT_S,
    connect_timeout_s: float = 20.0,
    node: str | None = None,
) -> TierReport:
    """Serve ``clients`` clients at ``address`` as participant ``tier_id`` of ``parent``.

    It registers with the parent once its clients connected (all of them, or those
    there after ``start_timeout_s``). Under a ``topology`` section it is the edge or
    region ``node`` of the tree (None: the edge its clients belong to).

    Raises:
        TransportError: the parent is unreachable within ``connect_timeout_s``, or the
            connection to it failed.
    """
    dep = deployment(config)
    center = dep.edge(clients, start_timeout_s=start_timeout_s)
    chunks = center.settings.chunks

    def make(target: str) -> GrpcLink:
        return GrpcLink(
            target, tier_id, token, tls=parent_tls, chunks=chunks,
            connect_timeout_s=connect_timeout_s,
        )  # fmt: skip

    targets = parents(parent)
    link: GrpcLink | FailoverLink = make(targets[0])
    again = None
    if len(targets) > 1:
        link = FailoverLink(targets, make, connect_timeout_s=connect_timeout_s)
        again = _search_again(link)
    async with (
        CenterServer(center, tokens, address=address, tls=tls, mutual=mutual) as server,
        link,
    ):
        log.warning("aggregator %d listening on %s (parent %s)", tier_id, server.target, parent)
        monitor = tier_monitoring(config, tier_id)
        try:
            tier = dep.tier(link, center, monitor, tier_id=tier_id, reconnect=again, node=node)
            return await tier.run()
        finally:
            if monitor is not None:
                monitor.close()


def _search_again(link: FailoverLink, attempts: int = 3) -> Reconnect:
    """A tier's reconnection over several parents: search the list again, giving up
    after ``attempts`` searches in a row found none."""
    failures = 0

    async def again(exc: TransportError) -> bool:
        nonlocal failures
        failures = failures + 1 if isinstance(exc, NoTargetError) else 0
        log.warning("aggregator: parent lost (%s); searching %s", exc, link.targets)
        await link.reconnect()
        return failures < attempts

    return again
