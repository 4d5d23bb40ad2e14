"""Commands of a real deployment: serve center/aggregator, client, pki, probe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedstrata.cli.app import _fail, _setup_logging, app
from fedstrata.cli.monitor import MetricsPortOpt, metrics_port_override
from fedstrata.config import load_config
from fedstrata.errors import ConfigError, FedstrataError

TOKEN_ENV = "FEDSTRATA_TOKEN"

# Options shared by the deployment commands.
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override: key.sub=value")]
CaOpt = Annotated[Path | None, typer.Option(help="CA certificate (PEM); omit for no TLS")]
TokensOpt = Annotated[Path, typer.Option(help="JSON {client id: token}")]
MutualOpt = Annotated[bool, typer.Option(help="require client certificates")]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(help=f"file holding the bearer token (or set {TOKEN_ENV}); keep it mode 600"),
]
TokenFlagOpt = Annotated[
    str,
    typer.Option("--token", help=f"deprecated (visible in ps): use --token-file or {TOKEN_ENV}"),
]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True)]
StartTimeoutOpt = Annotated[
    float,
    typer.Option(min=0.001, help="seconds the first round waits for every participant"),
]
ConnectTimeoutOpt = Annotated[
    float, typer.Option(min=0.001, help="seconds each connection attempt waits")
]
serve_app = typer.Typer(help="Run a federation's servers over gRPC.", no_args_is_help=True)


pki_app = typer.Typer(help="Credentials for a deployment.", no_args_is_help=True)


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> Any:
    if ca is None:
        return None
    from fedstrata.runtime.security import TlsFiles

    return TlsFiles(ca, cert, key)


def read_token(flag: str, path: Path | None) -> str:
    """The bearer token: from ``--token-file``, the environment, or the old flag.

    ``--token`` still works but warns: a command line is visible to every user of the
    host (``ps``, ``/proc/<pid>/cmdline``).

    Raises:
        ConfigError: both a flag and a file, an unreadable or empty file, or no token.
    """
    if flag and path is not None:
        raise ConfigError("give the token once: --token-file or --token, not both")
    if flag:
        typer.secho(
            f"warning: --token shows the token to every user of this host (ps);"
            f" use --token-file PATH or the {TOKEN_ENV} environment variable",
            err=True,
            fg="yellow",
        )
        return flag
    if path is not None:
        return _token_from_file(path)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no bearer token: pass --token-file PATH or set {TOKEN_ENV}")
    return token


def _token_from_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    if mode & 0o077:
        typer.secho(f"warning: {path} is readable by other users; chmod 600 it", err=True)
    return token


@serve_app.command("center")
def serve_center(
    config: Annotated[Path | None, typer.Argument(help="YAML config")] = None,
    *,
    set_: SetOpt = None,
    address: Annotated[str, typer.Option(help="host:port to listen on")] = "127.0.0.1:50051",
    tokens: TokensOpt = Path("tokens.json"),
    ca: CaOpt = None,
    cert: Annotated[Path | None, typer.Option(help="server certificate (PEM)")] = None,
    key: Annotated[Path | None, typer.Option(help="server key (PEM)")] = None,
    mutual: MutualOpt = False,
    participants: Annotated[
        int | None, typer.Option(help="aggregator tiers below the center (default: clients)")
    ] = None,
    min_clients: Annotated[
        int | None,
        typer.Option(min=1, help="quorum: reachable clients a round needs (rounds.min_clients)"),
    ] = None,
    start_timeout: StartTimeoutOpt = 60.0,
    output: Annotated[
        Path | None, typer.Option(help="where the run directory goes (output.dir)")
    ] = None,
    metrics_port: MetricsPortOpt = None,
    node: Annotated[
        str | None,
        typer.Option(
            help="with failover.enabled: this center node's name in the lease "
            "(default: HOST/ADDRESS); start one node per center host, the first to "
            "take the lease is active, the others are standbys"
        ),
    ] = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run the center (coordinator) of a real federation; writes its run directory.

    With failover.enabled (docs/resilience-failover.md) it is a center node: a standby
    until it holds the lease, then the active center, resuming from the newest
    checkpoint in checkpoint.object_url; deposed (its lease lost), a standby again."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.commands import load_tokens, run_center

    try:
        extra = [] if min_clients is None else [f"rounds.min_clients={min_clients}"]
        extra += [] if output is None else [f"output.dir={output}"]
        extra += metrics_port_override(metrics_port)
        cfg = load_config(config, None, [*(set_ or []), *extra])
        if cfg.failover.enabled:
            _serve_node(
                cfg, node or "", address, load_tokens(tokens), _tls(ca, cert, key),
                mutual=mutual, participants=participants, start_timeout=start_timeout,
            )  # fmt: skip
            return
        if node is not None:
            raise ConfigError("--node names a center node: it needs failover.enabled")
        result = asyncio.run(
            run_center(
                cfg,
                address=address,
                tokens=load_tokens(tokens),
                tls=_tls(ca, cert, key),
                mutual=mutual,
                participants=participants,
                start_timeout_s=start_timeout,
            )
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(f"finished {len(result.rounds)} rounds; {result.wire_bytes:,} bytes on the wire")
    if result.run_dir is not None:
        typer.echo(str(result.run_dir))


def _serve_node(
    cfg: Any, node: str, address: str, tokens: Any, tls: Any, *, mutual: bool,
    participants: int | None, start_timeout: float,
) -> None:  # fmt: skip
    """``serve center`` with ``failover.enabled``: one center node (may be a standby)."""
    import asyncio

    from fedstrata.runtime.node_command import default_node_name, run_center_node

    run = run_center_node(
        cfg, node=node or default_node_name(address), address=address, tokens=tokens,
        tls=tls, mutual=mutual, participants=participants, start_timeout_s=start_timeout,
    )  # fmt: skip
    outcome = asyncio.run(run)
    if outcome.result is None:
        typer.echo(f"the run was complete when this node took over (epoch {outcome.epoch})")
        return
    result = outcome.result
    typer.echo(
        f"finished {len(result.rounds)} rounds from round {outcome.start_round} as epoch "
        f"{outcome.epoch}; {result.wire_bytes:,} bytes on the wire"
    )
    if result.run_dir is not None:
        typer.echo(str(result.run_dir))


@serve_app.command("aggregator")
def serve_aggregator(
    config: Annotated[Path | None, typer.Argument(help="YAML config")] = None,
    *,
    set_: SetOpt = None,
    parent: Annotated[
        str,
        typer.Option(
            help="parent (center or region) host:port; several, comma-separated: "
            "the active center and its standbys, tried in order"
        ),
    ] = "127.0.0.1:50051",
    tier_id: Annotated[int, typer.Option(help="this tier's participant id at the parent")] = 0,
    token: TokenFlagOpt = "",
    token_file: TokenFileOpt = None,
    clients: Annotated[int, typer.Option(min=1, help="clients this tier serves")] = 1,
    node: Annotated[
        str | None,
        typer.Option(
            help="this aggregator's edge or region name in topology.edges/regions "
            "(default: the edge its clients belong to; a region must be named)"
        ),
    ] = None,
    address: Annotated[str, typer.Option(help="host:port to listen on")] = "127.0.0.1:50052",
    tokens: TokensOpt = Path("tokens.json"),
    ca: CaOpt = None,
    cert: Annotated[Path | None, typer.Option(help="this tier's server certificate")] = None,
    key: Annotated[Path | None, typer.Option(help="this tier's server key")] = None,
    parent_cert: Annotated[Path | None, typer.Option(help="client cert at the parent")] = None,
    parent_key: Annotated[Path | None, typer.Option(help="client key at the parent")] = None,
    mutual: MutualOpt = False,
    start_timeout: StartTimeoutOpt = 60.0,
    connect_timeout: ConnectTimeoutOpt = 20.0,
    metrics_port: MetricsPortOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run an edge or region aggregator between clients and a parent."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.commands import load_tokens, run_aggregator

    try:
        cfg = load_config(config, None, [*(set_ or []), *metrics_port_override(metrics_port)])
        report = asyncio.run(
            run_aggregator(
                cfg,
                parent=parent,
                tier_id=tier_id,
                token=read_token(token, token_file),
                parent_tls=_tls(ca, parent_cert, parent_key),
                clients=clients,
                address=address,
                tokens=load_tokens(tokens),
                tls=_tls(ca, cert, key),
                mutual=mutual,
                start_timeout_s=start_timeout,
                connect_timeout_s=connect_timeout,
                node=node,
            )
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(f"aggregated {len(report.rounds)} rounds; {len(report.refused)} refused")


@app.command("client")
def client_cmd(
    config: Annotated[
        Path | None, typer.Argument(help="YAML config (same as the center's)")
    ] = None,
    *,
    server: Annotated[
        str,
        typer.Option(
            help="center host:port; several, comma-separated (the active center "
            "and its standbys, or an edge, its spares and its parent): the first "
            "that serves is used, and a broken connection searches them again"
        ),
    ] = "127.0.0.1:50051",
    client_id: Annotated[int, typer.Option(help="this client's id")] = 0,
    token: TokenFlagOpt = "",
    token_file: TokenFileOpt = None,
    set_: SetOpt = None,
    ca: CaOpt = None,
    cert: Annotated[Path | None, typer.Option(help="client certificate for mutual TLS")] = None,
    key: Annotated[Path | None, typer.Option(help="client key for mutual TLS")] = None,
    retries: Annotated[
        int, typer.Option(min=0, help="reconnection attempts before giving up")
    ] = 6,
    connect_timeout: ConnectTimeoutOpt = 20.0,
    data: Annotated[
        Path | None,
        typer.Option(help="this client's own data directory, read by the task's local_data"),
    ] = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Take part in a real federation as one client, training on its own data (exits
    non-zero when it gives up)."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.client_link import Backoff
    from fedstrata.runtime.commands import run_client

    try:
        cfg = load_config(config, None, set_ or [])
        report = asyncio.run(
            run_client(
                cfg,
                server=server,
                client_id=client_id,
                token=read_token(token, token_file),
                tls=_tls(ca, cert, key),
                backoff=Backoff(attempts=retries),
                connect_timeout_s=connect_timeout,
                data_dir=data,
            )
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(f"client {client_id}: {report}")


@pki_app.command("dev")
def pki_dev(
    folder: Annotated[Path, typer.Argument(help="where to write the files")],
    clients: Annotated[int, typer.Option(min=1, help="number of client certificates")] = 10,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="a DNS name or IP address clients dial the server by (repeatable);"
            " localhost, 127.0.0.1 and ::1 are always included",
        ),
    ] = None,
) -> None:
    """Write a development CA, server and client certificates, and tokens.json."""
    from fedstrata.runtime.commands import write_dev_credentials

    try:
        typer.echo(str(write_dev_credentials(folder, clients, host or [])))
    except FedstrataError as exc:
        raise _fail(exc) from None


probe_app = typer.Typer(help="Measure links between real hosts.", no_args_is_help=True)


@probe_app.command("serve")
def probe_serve(
    host: Annotated[str, typer.Option(help="address to bind")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="port to listen on")] = 50060,
) -> None:
    """Answer latency probes (run one on every host)."""
    import asyncio

    from fedstrata.runtime.probe import ProbeServer

    async def serve() -> None:
        async with ProbeServer(host, port) as server:
            typer.echo(f"probe server on {host}:{server.port}")
            await server.serve_forever()

    asyncio.run(serve())


@probe_app.command("latency")
def probe_latency(
    hosts: Annotated[list[str], typer.Argument(help="HOST:PORT of each probe server")],
    *,
    names: Annotated[str | None, typer.Option(help="comma-separated site names")] = None,
    out: Annotated[Path, typer.Option(help="matrix file (.csv or .npz)")] = Path("latency.csv"),
) -> None:
    """Measure RTT and throughput between every pair of hosts; write the matrix."""
    import asyncio

    from fedstrata.runtime.probe import probe_matrix

    try:
        matrix, mbps = asyncio.run(probe_matrix(hosts, names.split(",") if names else None))
        matrix.save(out)
    except FedstrataError as exc:
        raise _fail(exc) from None
    table = Table(title="one-way latency ms / throughput Mb/s")
    table.add_column("from \\ to")
    for site in matrix.ids:
        table.add_column(site)
    for i, site in enumerate(matrix.ids):
        cells = [
            f"{matrix.latency_ms[i, j]:.2f} / {mbps[i, j]:.0f}" if i != j else "—"
            for j in range(len(matrix.ids))
        ]
        table.add_row(site, *cells)
    Console().print(table)
    typer.echo(str(out))


app.add_typer(serve_app, name="serve")
app.add_typer(pki_app, name="pki")
app.add_typer(probe_app, name="probe")
