"""Commands that simulate, report and plan: run, report, presets, show-config, plan,
device bench, config-reference, compatibility."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedstrata.cli.app import _fail, _human_bytes, _setup_logging, app, console
from fedstrata.cli.monitor import MetricsPortOpt, metrics_port_override
from fedstrata.cli.new import project_config
from fedstrata.config import FedConfig, dump_config, list_presets, load_config
from fedstrata.errors import ConfigError, DataError, FedstrataError

if TYPE_CHECKING:
    from fedstrata.monitoring import RoundMetrics


class _RoundProgress:
    """A rich progress bar fed by the simulator's per-round metrics.

    It shows from the command's start (:meth:`phase`: what is happening before the
    first round ends: importing torch, loading the data, training round 1), with a
    ticking elapsed time, so a run is never silent while it sets up.
    """

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
            refresh_per_second=4,
            disable=not enabled,
        )
        self.task = self.progress.add_task("rounds", total=total, info="starting…")

    def phase(self, info: str) -> None:
        """Show (starting the display if needed) what the run is doing now."""
        if not self.enabled:
            return
        if not self.progress.live.is_started:
            self.progress.start()
        self.progress.update(self.task, info=info)
        self.progress.refresh()

    def __call__(self, m: Any) -> None:
        self.bytes += m.bytes_up + m.bytes_down
        acc = "  —  " if m.accuracy is None else f"{m.accuracy:.3f}"
        loss = "  —  " if m.loss is None else f"{m.loss:.3f}"
        info = (
            f"acc {acc} loss {loss} sim {m.sim_time_s:.1f}s "
            f"{_human_bytes(self.bytes)} failed {m.clients_failed}"
        )
        if m.codec is not None and m.codec.uplink_ratio > 1.01:
            info += f" up {m.codec.uplink_ratio:.0f}x"
        if m.privacy is not None:
            info += f" ε {m.privacy.epsilon_spent:.3f}"
        self.progress.update(self.task, advance=1, info=info)
        if not self.enabled:
            return
        if not self.progress.live.is_started:
            self.progress.start()
        self.progress.refresh()

    def resumed_at(self, rounds_done: int) -> None:
        """The run continues after ``rounds_done`` rounds (shown as done)."""
        self.progress.update(
            self.task, completed=rounds_done, info=f"resumed at round {rounds_done}"
        )

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
        *_fed_eval_rows(sim.fed_evals),
        *result.notes.items(),
        ("clients trained", result.executor),
    ]
    if result.run_dir is not None:
        rows.append(("run directory", str(result.run_dir)))
        report = result.run_dir / "report.html"
        if getattr(result, "report_pending", False):
            rows.append(("report", f"{report} (being written in the background)"))
        elif report.exists():
            rows.append(("report", str(report)))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _fed_eval_rows(evals: list[Any]) -> list[tuple[str, str]]:
    """The last federated evaluation: each metric's weighted mean and worst 10%."""
    if not evals:
        return []
    last = evals[-1]
    where = f"round {last.round_idx}, {len(last.results)} clients"
    return [
        (f"federated {d.metric}", f"mean {d.mean:.4f}, worst 10% {d.worst10:.4f} ({where})")
        for d in last.distributions
    ]


def _extra_rows(rounds: list[Any], stopped: str | None) -> list[tuple[str, str]]:
    rows = []
    ratios = [m.codec.uplink_ratio if m.codec is not None else 1.0 for m in rounds]
    if ratios and sum(ratios) / len(ratios) > 1.01:
        mean = sum(ratios) / len(ratios)
        rows.append(("uplink compression", f"{mean:.1f}x fewer bytes than dense float32"))
    scaled = [m.precision for m in rounds if m.precision is not None]
    if scaled:
        skipped = sum(p.skipped_steps for p in scaled)
        rows.append(("fp16 skipped steps", f"{skipped} (overflowing gradients, all rounds)"))
    if rounds:
        rows += _final_rows(rounds[-1])
    if stopped:
        rows.append(("stopped early", stopped))
    return rows


def _final_rows(last: RoundMetrics) -> list[tuple[str, str]]:
    """The last round's task metrics and typed feature records, read by field."""
    extras = sorted(last.extras.items())
    rows = [(f"final {k}", f"{v:.4f}") for k, v in extras if k.startswith("test_")]
    if last.privacy is not None:
        rows.append(("privacy spent (ε)", f"{last.privacy.epsilon_spent:.4f}"))
    if (t := last.tiers) is not None:
        ingress = f"edge {t.edge_ingress_bytes:,} B, region {t.region_ingress_bytes:,} B"
        rows.append(
            ("tier ingress (last round)", f"{ingress}, center {t.center_ingress_bytes:,} B")
        )
    if (sc := last.schedule) is not None:
        plan = f"target {sc.target_s:.3g} s, {sc.partial} partial, {sc.dropped} dropped"
        rows.append(("scheduler (last round)", plan))
    if last.secagg is not None:
        rows.append(("secure aggregation", f"{last.secagg.bandwidth_expansion:.2f}x bandwidth"))
    if last.fedbuff is not None:
        rows.append(("staleness (last step)", f"mean {last.fedbuff.staleness_mean:.2f}"))
    return rows


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML config file, or a project folder (its fedstrata.yaml)"),
    ] = None,
    *,
    preset: Annotated[str | None, typer.Option(help="start from a built-in preset")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override: key.sub=value")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    metrics_port: MetricsPortOpt = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True)] = 0,
    resume: Annotated[
        Path | None,
        typer.Option(help="continue this interrupted run directory from its newest checkpoint"),
    ] = None,
) -> None:
    """Run a federation in the simulator (./fedstrata.yaml when no config is given)."""
    _setup_logging(verbose)
    try:
        overrides = [*(set_ or []), *metrics_port_override(metrics_port)]
        if resume is None:
            cfg = load_config(project_config(config, preset), preset, overrides)
        else:
            cfg = resume_config(resume, config, preset, overrides)
    except FedstrataError as exc:
        raise _fail(exc) from None
    progress = _RoundProgress(cfg.rounds.rounds, cfg.output.progress and not quiet)
    progress.phase("importing the simulator and torch…")
    from fedstrata.api import run as run_federation

    def resumed(rounds_done: int) -> None:
        progress.resumed_at(rounds_done)
        console.print(f"[bold]resumed[/] {resume} at round {rounds_done}")

    def banner(num_clients: int) -> None:  # once the data are loaded: their real count
        console.print(
            f"[bold]fedstrata[/] {cfg.name}: {num_clients} clients ({_data_source(cfg)}), "
            f"{cfg.rounds.rounds} rounds"
        )
        progress.phase("round 1: building the model and training…")

    try:
        progress.phase("loading the data…")
        result = run_federation(
            cfg, on_round=progress, on_start=banner, background_report=True,
            resume=resume, on_resume=resumed,
        )  # fmt: skip
    except FedstrataError as exc:
        progress.stop()
        raise _fail(exc) from None
    except KeyboardInterrupt as exc:
        progress.stop()
        console.print(_interrupted_text(exc), soft_wrap=True)
        raise typer.Exit(code=130) from None
    progress.stop()
    Console().print(_summary_table(result))


def _data_source(cfg: FedConfig) -> str:
    if cfg.task is not None:
        return f"task {cfg.task}"
    if cfg.data.name == "npz":
        return f"npz folder {cfg.data.path}"
    return f"{cfg.data.name}, {cfg.data.partition}"


def _interrupted_text(exc: KeyboardInterrupt) -> str:
    """One line: how far the run got and where its model is."""
    from fedstrata.api.runner import RunInterrupted

    if not isinstance(exc, RunInterrupted):
        return "[bold yellow]interrupted[/]"
    text = f"[bold yellow]{exc}[/]"
    if exc.run_dir is not None:
        kept = "model and metrics" if exc.rounds else "run record"
        text += f"; {kept} saved in {exc.run_dir}"
    return text


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run directory")]) -> None:
    """Write RUN_DIR/report.html: the twelve federation metrics, the features' sections,
    federated evaluation (also how ``fedstrata run``'s background report is redone)."""
    from fedstrata.monitoring import write_report

    try:
        path = write_report(run_dir)
    except FedstrataError as exc:
        raise _fail(exc) from None
    typer.echo(str(path))


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    out: Annotated[Path, typer.Option(help="where to write the page")] = Path("compare.html"),
) -> None:
    """Put runs side by side: their summaries, the twelve federation metrics and figures."""
    from fedstrata.monitoring.compare import write_comparison

    try:
        path = write_comparison(run_dirs, out)
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


device_app = typer.Typer(help="Measure and register this device.", no_args_is_help=True)


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
    table.add_row("compute", f"{m.cpu_score:.3g} GFLOP/s at fp32 (model {cfg.model.kind})")
    table.add_row("speed at bf16 / fp16", f"x{m.bf16_speedup:.2f} / x{m.fp16_speedup:.2f}")
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


@app.command("compatibility")
def compatibility_cmd() -> None:
    """Print which features combine, per driver and per pair (Markdown)."""
    from fedstrata.config.compat_table import compatibility_table

    typer.echo(compatibility_table())


app.add_typer(device_app, name="device")


def resume_config(
    run_dir: Path, config: Path | None, preset: str | None, overrides: list[str]
) -> FedConfig:
    """The configuration of the run in ``run_dir`` (its ``config.yaml``).

    Raises:
        ConfigError: overrides or a preset were given (a resume runs the run's own
            configuration), or a config file that differs from the run's.
        DataError: ``run_dir`` has no ``config.yaml``.
    """
    if overrides or preset is not None:
        raise ConfigError("--resume runs the run's own configuration: drop --set and --preset")
    stored = run_dir / "config.yaml"
    if not stored.is_file():
        raise DataError(f"cannot resume {run_dir}: {stored} is missing (not a run directory?)")
    cfg = load_config(stored)
    if config is not None:
        given = load_config(project_config(config, None))
        if dump_config(given) != dump_config(cfg):
            raise ConfigError(
                f"cannot resume {run_dir} with {config}: it differs from the run's "
                f"configuration ({stored}); leave the config out to use the run's"
            )
    return cfg
