"""The ``fedstrata`` command line (typer). The only place that configures logging."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedstrata.config import dump_config, list_presets, load_config
from fedstrata.errors import FedstrataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="fedstrata: fast, private, hierarchical federated learning.",
)
console = Console(stderr=True)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


def _fail(exc: FedstrataError) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class _RoundProgress:
    """A rich progress bar fed by the simulator's per-round metrics."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bytes = 0
        self.progress = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            disable=not enabled,
        )
        self.task = self.progress.add_task("rounds", total=total, info="starting…")

    def __call__(self, m: Any) -> None:
        self.bytes += m.bytes_up + m.bytes_down
        acc = "  —  " if m.accuracy is None else f"{m.accuracy:.3f}"
        loss = "  —  " if m.loss is None else f"{m.loss:.3f}"
        info = (
            f"acc {acc} loss {loss} sim {m.sim_time_s:.1f}s "
            f"{_human_bytes(self.bytes)} failed {m.clients_failed}"
        )
        if m.extras.get("uplink_ratio", 1.0) > 1.01:
            info += f" up {m.extras['uplink_ratio']:.0f}x"
        if "epsilon_spent" in m.extras:
            info += f" ε {m.extras['epsilon_spent']:.3f}"
        if not self.progress.live.is_started and self.enabled:
            self.progress.start()
        self.progress.update(self.task, advance=1, info=info)
        self.progress.refresh()

    def stop(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()


def _summary_table(result: Any) -> Table:
    sim = result.simulation
    rounds = sim.rounds
    accs = [m.accuracy for m in rounds if m.accuracy is not None]
    table = Table(title="federation summary", show_header=False)
    rows = [
        ("rounds", str(len(rounds))),
        ("final accuracy", f"{accs[-1]:.4f}" if accs else "—"),
        ("best accuracy", f"{max(accs):.4f}" if accs else "—"),
        ("simulated time", f"{sim.sim_time_s:.1f} s"),
        ("wall time", f"{sim.wall_s:.1f} s"),
        (
            "bytes up / down",
            f"{_human_bytes(sum(m.bytes_up for m in rounds))} / "
            f"{_human_bytes(sum(m.bytes_down for m in rounds))}",
        ),
        ("failed client updates", str(sum(m.clients_failed for m in rounds))),
        ("parameters", f"{result.num_params:,}"),
        *_extra_rows(rounds, sim.stopped_reason),
        ("worker processes", str(result.workers) if result.workers else "in-process"),
    ]
    if result.run_dir is not None:
        rows.append(("run directory", str(result.run_dir)))
        report = result.run_dir / "report.html"
        if report.exists():
            rows.append(("report", str(report)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _extra_rows(rounds: list[Any], stopped: str | None) -> list[tuple[str, str]]:
    rows = []
    last = rounds[-1].extras if rounds else {}
    ratios = [m.extras.get("uplink_ratio", 1.0) for m in rounds]
    if ratios and sum(ratios) / len(ratios) > 1.01:
        mean = sum(ratios) / len(ratios)
        rows.append(("uplink compression", f"{mean:.1f}x fewer bytes than dense float32"))
    if "epsilon_spent" in last:
        rows.append(("privacy spent (ε)", f"{last['epsilon_spent']:.4f}"))
    if stopped:
        rows.append(("stopped early", stopped))
    return rows


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file")] = None,
    preset: Annotated[str | None, typer.Option(help="start from a built-in preset")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override: key.sub=value")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Run a federation in the simulator."""
    _setup_logging(verbose)
    try:
        cfg = load_config(config, preset, set_ or [])
    except FedstrataError as exc:
        raise _fail(exc) from None
    from fedstrata.api import run as run_federation

    progress = _RoundProgress(cfg.rounds.rounds, cfg.output.progress and not quiet)
    console.print(
        f"[bold]fedstrata[/] {cfg.name}: {cfg.data.num_clients} clients "
        f"({cfg.data.name}, {cfg.data.partition}), {cfg.rounds.rounds} rounds"
    )
    try:
        result = run_federation(cfg, on_round=progress)
    except FedstrataError as exc:
        progress.stop()
        raise _fail(exc) from None
    progress.stop()
    Console().print(_summary_table(result))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Write RUN_DIR/report.html (accuracy, bytes, round-time breakdown)."""
    from fedstrata.monitoring import write_report

    try:
        path = write_report(run_dir)
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(str(path))


@app.command()
def presets() -> None:
    """List the built-in presets."""
    for name in list_presets():
        typer.echo(name)


@app.command("show-config")
def show_config(
    config: Annotated[Path | None, typer.Argument()] = None,
    preset: Annotated[str | None, typer.Option()] = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the resolved configuration."""
    try:
        cfg = load_config(config, preset, set_ or [])
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2) if as_json else dump_config(cfg))


@app.command("plan")
def plan_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML config")] = None,
    *,
    preset: Annotated[str | None, typer.Option()] = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
) -> None:
    """Print the aggregation tree and the predicted round time, flat vs this tree."""
    _setup_logging(0)
    from fedstrata.api.plan import describe_plan

    try:
        cfg = load_config(config, preset, set_ or [])
        text = describe_plan(cfg)
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(text)


serve_app = typer.Typer(help="Run a federation's servers over gRPC.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
pki_app = typer.Typer(help="Credentials for a deployment.", no_args_is_help=True)
app.add_typer(pki_app, name="pki")


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> Any:
    if ca is None:
        return None
    from fedstrata.runtime.security import TlsFiles

    return TlsFiles(ca, cert, key)


@serve_app.command("center")
def serve_center(
    config: Annotated[Path | None, typer.Argument(help="YAML config")] = None,
    *,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    address: Annotated[str, typer.Option(help="host:port to listen on")] = "127.0.0.1:50051",
    tokens: Annotated[Path, typer.Option(help="JSON {client id: token}")] = Path("tokens.json"),
    ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM); omit for no TLS")] = None,
    cert: Annotated[Path | None, typer.Option(help="server certificate (PEM)")] = None,
    key: Annotated[Path | None, typer.Option(help="server key (PEM)")] = None,
    mutual: Annotated[bool, typer.Option(help="require client certificates")] = False,
    participants: Annotated[
        int | None, typer.Option(help="aggregator tiers below the center (default: clients)")
    ] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Run the center (coordinator) of a real federation."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.commands import load_tokens, run_center

    try:
        cfg = load_config(config, None, set_ or [])
        result = asyncio.run(
            run_center(
                cfg,
                address=address,
                tokens=load_tokens(tokens),
                tls=_tls(ca, cert, key),
                mutual=mutual,
                participants=participants,
            )
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(f"finished {len(result.rounds)} rounds; {result.wire_bytes:,} bytes on the wire")


@serve_app.command("aggregator")
def serve_aggregator(
    config: Annotated[Path | None, typer.Argument(help="YAML config")] = None,
    *,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    parent: Annotated[str, typer.Option(help="parent (center or region) host:port")] = (
        "127.0.0.1:50051"
    ),
    tier_id: Annotated[int, typer.Option(help="this tier's participant id at the parent")] = 0,
    token: Annotated[str, typer.Option(envvar="FEDSTRATA_TOKEN", help="token at the parent")] = "",
    clients: Annotated[int, typer.Option(min=1, help="clients this tier serves")] = 1,
    address: Annotated[str, typer.Option(help="host:port to listen on")] = "127.0.0.1:50052",
    tokens: Annotated[Path, typer.Option(help="JSON {client id: token}")] = Path("tokens.json"),
    ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM); omit for no TLS")] = None,
    cert: Annotated[Path | None, typer.Option(help="this tier's server certificate")] = None,
    key: Annotated[Path | None, typer.Option(help="this tier's server key")] = None,
    parent_cert: Annotated[Path | None, typer.Option(help="client cert at the parent")] = None,
    parent_key: Annotated[Path | None, typer.Option(help="client key at the parent")] = None,
    mutual: Annotated[bool, typer.Option(help="require client certificates")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Run an edge or region aggregator between clients and a parent."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.commands import load_tokens, run_aggregator

    try:
        cfg = load_config(config, None, set_ or [])
        report = asyncio.run(
            run_aggregator(
                cfg,
                parent=parent,
                tier_id=tier_id,
                token=token,
                parent_tls=_tls(ca, parent_cert, parent_key),
                clients=clients,
                address=address,
                tokens=load_tokens(tokens),
                tls=_tls(ca, cert, key),
                mutual=mutual,
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
    server: Annotated[str, typer.Option(help="center host:port")] = "127.0.0.1:50051",
    client_id: Annotated[int, typer.Option(help="this client's id")] = 0,
    token: Annotated[str, typer.Option(envvar="FEDSTRATA_TOKEN", help="bearer token")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate (PEM); omit for no TLS")] = None,
    cert: Annotated[Path | None, typer.Option(help="client certificate for mutual TLS")] = None,
    key: Annotated[Path | None, typer.Option(help="client key for mutual TLS")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
) -> None:
    """Take part in a real federation as one client."""
    import asyncio

    _setup_logging(verbose)
    from fedstrata.runtime.commands import run_client

    try:
        cfg = load_config(config, None, set_ or [])
        report = asyncio.run(
            run_client(
                cfg, server=server, client_id=client_id, token=token, tls=_tls(ca, cert, key)
            )
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(f"client {client_id}: {report}")


@pki_app.command("dev")
def pki_dev(
    folder: Annotated[Path, typer.Argument(help="where to write the files")],
    clients: Annotated[int, typer.Option(min=1, help="number of client certificates")] = 10,
) -> None:
    """Write a development CA, server and client certificates, and tokens.json."""
    from fedstrata.runtime.commands import write_dev_credentials

    typer.echo(str(write_dev_credentials(folder, clients)))


probe_app = typer.Typer(help="Measure links between real hosts.", no_args_is_help=True)
app.add_typer(probe_app, name="probe")


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


device_app = typer.Typer(help="Measure and register this device.", no_args_is_help=True)
app.add_typer(device_app, name="device")


@device_app.command("bench")
def device_bench(
    config: Annotated[Path | None, typer.Argument(help="YAML config (its model is timed)")] = None,
    *,
    preset: Annotated[str | None, typer.Option()] = None,
    set_: Annotated[list[str] | None, typer.Option("--set")] = None,
    center: Annotated[str | None, typer.Option(help="HOST:PORT to time the RTT to")] = None,
    register: Annotated[str | None, typer.Option(help="registry URL or SQLite path")] = None,
    device_id: Annotated[int, typer.Option(help="id to register the device under")] = 0,
    repeats: Annotated[int, typer.Option(min=1)] = 3,
) -> None:
    """Time local training of the configured model here; optionally register it."""
    _setup_logging(0)
    from fedstrata.api.device import bench_device

    try:
        cfg = load_config(config, preset, set_ or [])
        m = bench_device(
            cfg, center=center, registry_url=register, device_id=device_id, repeats=repeats
        )
    except FedstrataError as exc:
        raise _fail(exc) from None
    table = Table(title="device benchmark", show_header=False)
    table.add_row("training throughput", f"{m.throughput_eps:,.0f} examples/s")
    table.add_row("compute", f"{m.cpu_score:.3g} GFLOP/s (model {cfg.model.kind})")
    table.add_row(
        "memory available / total", f"{m.memory_available_gb:.1f} / {m.memory_total_gb:.1f} GB"
    )
    table.add_row("RTT to center", "—" if m.rtt_ms is None else f"{m.rtt_ms:.2f} ms")
    if register:
        table.add_row("registered as", f"device {device_id} in {register}")
    Console().print(table)


@app.command("config-reference")
def config_reference_cmd() -> None:
    """Print the configuration reference (Markdown)."""
    from fedstrata.config.reference import config_reference

    typer.echo(config_reference())


def main() -> None:
    """Console-script entry point."""
    app()
