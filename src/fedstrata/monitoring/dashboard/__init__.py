"""The web dashboard (Issue 16 part 3): a small ASGI app over a run store.

``fedstrata dashboard RUN_DIR`` serves it for a finished run, ``--live`` for one a
simulation or a deployment is still writing: the page (uPlot charts, vendored under
``static/`` with its licence; nothing is fetched from a CDN) polls JSON endpoints with
a ``since=round`` cursor, so charts update without a reload. The server reads the
store read-only and aggregates: series are downsampled (LTTB), the utilization heat
map is binned, the device tables hold the top N, so 10,000 devices x 1,000 rounds
stay responsive. See ``docs/dashboard.md``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette

from fedstrata.monitoring.dashboard._catalogue import Catalogue, default_catalogue
from fedstrata.monitoring.dashboard._downsample import bin_mean, lttb
from fedstrata.monitoring.dashboard._server import BackgroundServer
from fedstrata.monitoring.dashboard._source import RunSource, Snapshot, find_run_dir
from fedstrata.monitoring.dashboard.app import create_app, static_dir
from fedstrata.monitoring.dashboard.models import Budget

__all__ = [
    "BackgroundServer",
    "Budget",
    "Catalogue",
    "RunSource",
    "Snapshot",
    "bin_mean",
    "create_app",
    "default_catalogue",
    "find_run_dir",
    "lttb",
    "open_dashboard",
    "static_dir",
]


def open_dashboard(
    run_dir: Path,
    *,
    live: bool = False,
    budget: Budget | None = None,
    poll_ms: int = 500,
    catalogue: Catalogue | None = None,
) -> Starlette:
    """The dashboard app of ``run_dir`` (or the newest run in it), read-only.

    Raises:
        DataError: no run directory there, or its store is unreadable.
    """
    source = RunSource.open(run_dir, catalogue or default_catalogue(), budget=budget)
    return create_app(source, live=live, poll_ms=poll_ms)
