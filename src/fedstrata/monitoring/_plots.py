"""Report figures, rendered to inline SVG strings with matplotlib.

Matplotlib (the ``plot`` extra) is imported lazily (inside :func:`render_plots`), drawn
on an explicit Agg canvas (no pyplot, no global backend switch), and configured only
through a local ``rc_context``. Text from the run (extras names) is escaped for
mathtext; matplotlib's SVG writer escapes XML itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import MissingDependencyError
from fedstrata.monitoring.events import RoundMetrics
from fedstrata.monitoring.fedeval import FedEvalMetrics

__all__ = [
    "FED_EVAL_SECTION",
    "Panel",
    "Plot",
    "render_fed_eval_plots",
    "render_panels",
    "render_plots",
    "varies",
]

FED_EVAL_SECTION = "Federated evaluation"
MAX_FED_EVAL_METRICS = 6

_MARKER_MAX_POINTS = 60
_BAR_MAX_ROUNDS = 60
_MAIN_SIZE_IN = (6.4, 3.0)
_SMALL_SIZE_IN = (4.2, 2.4)
Array = NDArray[np.float64]


@dataclass(frozen=True)
class Plot:
    """One rendered figure.

    Attributes:
        section: the report section it belongs to.
        title: its caption (plain text; escape before putting it in HTML).
        svg: the ``<svg>`` element (no XML prolog), safe to inline.
    """

    section: str
    title: str
    svg: str


def _column(rounds: Sequence[RoundMetrics], name: str) -> Array:
    values = [getattr(m, name) for m in rounds]
    column = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    column[~np.isfinite(column)] = np.nan
    return column


def _mathtext_safe(text: str) -> str:
    return text.replace("$", r"\$")


def _scale(values: Array, units: Sequence[tuple[str, float]]) -> tuple[Array, str]:
    """Divide ``values`` by the largest unit not above their maximum."""
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    label, factor = units[0]
    for unit, size in units:
        if top >= size:
            label, factor = unit, size
    return values / factor, label


_TIME_UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0))
_BYTE_UNITS = (("B", 1.0), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12))


def _line(ax: Any, x: Array, y: Array, label: str) -> bool:
    """Plot the finite points of ``y``; return whether there were any."""
    mask = np.isfinite(y)
    if not mask.any():
        return False
    marker = "o" if mask.sum() <= _MARKER_MAX_POINTS else None
    ax.plot(x[mask], y[mask], marker=marker, markersize=3, linewidth=1.2, label=label)
    return True


class _Renderer:
    """Builds figures on Agg canvases and serialises them to SVG."""

    def __init__(self, rounds: Sequence[RoundMetrics], salt: str = "fedstrata") -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._figure_cls = Figure
        self._canvas_cls = FigureCanvasAgg
        self.rounds = rounds
        self.x = np.array([m.round_idx for m in rounds], dtype=np.float64)
        self.plots: list[Plot] = []
        self._salt = salt  # SVG ids must differ between renderers of one page

    def axes(self, title: str, xlabel: str, ylabel: str, small: bool = False) -> Any:
        fig = self._figure_cls(figsize=_SMALL_SIZE_IN if small else _MAIN_SIZE_IN)
        self._canvas_cls(fig)
        ax = fig.add_subplot()
        ax.set_title(_mathtext_safe(title))
        ax.set_xlabel(_mathtext_safe(xlabel))
        ax.set_ylabel(_mathtext_safe(ylabel))
        if xlabel == "round":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return ax

    def add(self, section: str, title: str, ax: Any, legend: bool = False) -> None:
        import io

        import matplotlib

        if legend:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        fig = ax.figure
        fig.tight_layout()
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.hashsalt": f"{self._salt}-{len(self.plots)}"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        text = buffer.getvalue()
        self.plots.append(Plot(section, title, text[text.index("<svg") :]))


def _accuracy(r: _Renderer) -> None:
    accuracy = _column(r.rounds, "accuracy")
    if not np.isfinite(accuracy).any():
        return
    ax = r.axes("Test accuracy vs round", "round", "accuracy")
    _line(ax, r.x, accuracy, "accuracy")
    r.add("Accuracy", "Test accuracy vs round", ax)
    sim_time, unit = _scale(_column(r.rounds, "sim_time_s"), _TIME_UNITS)
    ax = r.axes("Test accuracy vs simulated time", f"simulated time ({unit})", "accuracy")
    _line(ax, sim_time, accuracy, "accuracy")
    r.add("Accuracy", "Test accuracy vs simulated time", ax)


def _loss(r: _Renderer) -> None:
    ax = r.axes("Loss vs round", "round", "loss")
    drawn = _line(ax, r.x, _column(r.rounds, "loss"), "test loss")
    drawn = _line(ax, r.x, _column(r.rounds, "train_loss"), "train loss") or drawn
    if drawn:
        r.add("Loss", "Loss vs round", ax, legend=True)


def _bytes(r: _Renderer) -> None:
    up, down = _column(r.rounds, "bytes_up"), _column(r.rounds, "bytes_down")
    _, unit = _scale(np.concatenate([up, down]), _BYTE_UNITS)
    factor = dict(_BYTE_UNITS)[unit]
    ax = r.axes("Bytes per round", "round", unit)
    _line(ax, r.x, up / factor, "up (clients → server)")
    _line(ax, r.x, down / factor, "down (server → clients)")
    r.add("Communication", "Bytes per round", ax, legend=True)


def _breakdown(r: _Renderer) -> None:
    parts = {name: _column(r.rounds, f"{name}_s") for name in ("downlink", "compute", "uplink")}
    other = _column(r.rounds, "sim_round_s") - sum(parts.values())
    if (other > 1e-9 * (1.0 + _column(r.rounds, "sim_round_s"))).any():
        parts["other"] = np.clip(other, 0.0, None)
    stacked, unit = _scale(np.vstack(list(parts.values())), _TIME_UNITS)
    ax = r.axes("Round time breakdown (critical path)", "round", f"simulated time ({unit})")
    if len(r.rounds) <= _BAR_MAX_ROUNDS:
        bottom = np.zeros(len(r.rounds))
        for label, heights in zip(parts, stacked, strict=True):
            ax.bar(r.x, heights, bottom=bottom, width=0.8, label=label)
            bottom += heights
    else:
        ax.stackplot(r.x, stacked, labels=list(parts))
    r.add("Round time", "Round time breakdown (critical path)", ax, legend=True)


@dataclass(frozen=True)
class Panel:
    """A figure to draw: named series against ``x`` (NumPy only; drawn by
    :func:`render_panels`).

    Attributes:
        section: the report section it belongs to.
        title: its caption.
        xlabel: the x axis' label.
        ylabel: the y axis' label.
        x: the x values (one per point of each series).
        series: label -> y values (NaN: no point); a histogram's values for ``hist``.
        kind: ``line``, ``scatter`` or ``hist``.
        small: a small figure (the default) rather than a wide one.
    """

    section: str
    title: str
    xlabel: str
    ylabel: str
    x: Array
    series: Mapping[str, Array]
    kind: Literal["line", "scatter", "hist"] = "line"
    small: bool = True


def varies(values: Array) -> bool:
    """Whether the finite ``values`` take more than one value (a constant series, or
    one with a single point, gets no panel: a table states it)."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    spread = float(finite.max() - finite.min())
    return spread > 1e-9 * max(1.0, float(np.abs(finite).max()))


def _draw(r: _Renderer, panel: Panel) -> None:
    ax = r.axes(panel.title, panel.xlabel, panel.ylabel, small=panel.small)
    drawn = False
    for label, y in panel.series.items():
        if panel.kind == "hist":
            finite = y[np.isfinite(y)]
            if finite.size:
                ax.hist(finite, bins=min(20, max(5, finite.size // 2)), label=label)
                drawn = True
        elif panel.kind == "scatter":
            mask = np.isfinite(y) & np.isfinite(panel.x)
            if mask.any():
                ax.scatter(panel.x[mask], y[mask], s=8, label=label)
                drawn = True
        else:
            drawn = _line(ax, panel.x, y, label) or drawn
    if drawn:
        r.add(panel.section, panel.title, ax, legend=len(panel.series) > 1)


def render_panels(panels: Sequence[Panel], salt: str = "fedstrata-panels") -> list[Plot]:
    """Draw ``panels`` (none drawn for a panel without finite points).

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``plot`` extra).
    """
    if not panels:
        return []
    matplotlib = _matplotlib()
    with matplotlib.rc_context(_RC):
        renderer = _Renderer((), salt=salt)
        for panel in panels:
            _draw(renderer, panel)
    return renderer.plots


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "fedstrata[plot]", "drawing figures") from exc
    return matplotlib


_RC = {
    "svg.fonttype": "none",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100.0,
}
_SECTIONS: tuple[Callable[[_Renderer], None], ...] = (_accuracy, _loss, _bytes, _breakdown)


def _fed_eval_metric(r: _Renderer, evals: Sequence[FedEvalMetrics], metric: str) -> None:
    x = np.array([e.round_idx for e in evals], dtype=np.float64)
    dists = [e.get(metric) for e in evals]

    def col(name: str) -> Array:
        return np.array([np.nan if d is None else getattr(d, name) for d in dists])

    title = f"Federated {metric} vs round"
    ax = r.axes(title, "round", metric)
    p10, p90 = col("p10"), col("p90")
    band = np.isfinite(p10) & np.isfinite(p90)
    ax.fill_between(x[band], p10[band], p90[band], alpha=0.2, label="p10 to p90 of clients")
    _line(ax, x, col("mean"), "weighted mean")
    _line(ax, x, col("p50"), "median client")
    _line(ax, x, col("worst10"), "worst 10% of clients")
    r.add(FED_EVAL_SECTION, title, ax, legend=True)
    last = evals[-1]
    values = np.array([c.metrics.get(metric, np.nan) for c in last.results], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size:
        title = f"{metric} per client, round {last.round_idx} ({values.size} clients)"
        ax = r.axes(title, metric, "clients", small=True)
        ax.hist(values, bins=min(20, max(5, values.size // 2)))
        r.add(FED_EVAL_SECTION, title, ax)


def render_fed_eval_plots(evals: Sequence[FedEvalMetrics]) -> list[Plot]:
    """Per metric (at most six): the weighted mean, median, worst 10% and p10 to p90 band
    over clients vs round, and the last evaluation's histogram over clients."""
    if not evals:
        return []
    import matplotlib

    metrics = sorted({d.metric for e in evals for d in e.distributions})
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9.0, "axes.grid": True}):
        renderer = _Renderer((), salt="fedstrata-fed-eval")
        for metric in metrics[:MAX_FED_EVAL_METRICS]:
            _fed_eval_metric(renderer, evals, metric)
    return renderer.plots


def render_plots(rounds: Sequence[RoundMetrics]) -> list[Plot]:
    """The run's main figures (none when there are no rounds): test accuracy vs round
    and vs simulated time (section ``Accuracy``), loss (``Loss``), bytes per round
    (``Communication``) and the round-time breakdown (``Round time``).

    Figures without data (no accuracy measured, no loss) are left out rather than
    drawn empty.

    Raises:
        MissingDependencyError: matplotlib is not installed (the ``plot`` extra).
    """
    if not rounds:
        return []
    matplotlib = _matplotlib()
    with matplotlib.rc_context(_RC):
        renderer = _Renderer(rounds)
        for section in _SECTIONS:
            section(renderer)
    return renderer.plots
