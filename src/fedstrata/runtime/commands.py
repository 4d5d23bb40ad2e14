"""What ``fedstrata serve center``, ``serve aggregator``, ``client`` and ``pki`` run."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from fedstrata.config import FedConfig
from fedstrata.errors import ConfigError
from fedstrata.runtime.aggregator import TierReport
from fedstrata.runtime.build import DEFAULT_BACKOFF, DEFAULT_START_TIMEOUT_S, deployment
from fedstrata.runtime.center import RuntimeResult
from fedstrata.runtime.client import Backoff, ClientReport
from fedstrata.runtime.link import GrpcLink
from fedstrata.runtime.recorder import RunRecorder
from fedstrata.runtime.security import TlsFiles, TokenTable, make_dev_pki, new_token
from fedstrata.runtime.wire import CenterServer

__all__ = [
    "load_tokens",
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
        async with CenterServer(center, tokens, address=address, tls=tls, mutual=mutual) as server:
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

    Raises:
        TransportError: the server stayed unreachable through ``backoff``'s attempts
            (each waits at most ``connect_timeout_s`` for the connection).
        ProtocolError: the server refused this client.
    """
    dep = deployment(config, data_dir=data_dir)
    async with GrpcLink(
        server, client_id, token, tls=tls, connect_timeout_s=connect_timeout_s
    ) as link:
        return await dep.client(link, client_id, backoff=backoff).run()


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
) -> TierReport:
    """Serve ``clients`` clients at ``address`` as participant ``tier_id`` of ``parent``.

    It registers with the parent once its clients connected (all of them, or those
    there after ``start_timeout_s``).

    Raises:
        TransportError: the parent is unreachable within ``connect_timeout_s``, or the
            connection to it failed.
    """
    dep = deployment(config)
    center = dep.edge(clients, start_timeout_s=start_timeout_s)
    chunks = center.settings.chunks
    async with (
        CenterServer(center, tokens, address=address, tls=tls, mutual=mutual) as server,
        GrpcLink(
            parent,
            tier_id,
            token,
            tls=parent_tls,
            chunks=chunks,
            connect_timeout_s=connect_timeout_s,
        ) as link,  # fmt: skip
    ):
        log.warning("aggregator %d listening on %s (parent %s)", tier_id, server.target, parent)
        return await dep.tier(link, center).run()
