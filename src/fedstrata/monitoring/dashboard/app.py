"""The dashboard as an ASGI app (Starlette): a page, its static files, JSON endpoints.

Endpoints (each returns a model of :mod:`.models`)::

    GET /                      the page (charts drawn in the browser with uPlot)
    GET /api/meta              MetaResponse: the run, the twelve metrics, the budget
    GET /api/metrics?since=R&points=N   MetricsResponse: series after round R (or all)
    GET /api/privacy?points=N  PrivacyResponse: ε spent against budget and plan
    GET /api/devices?top=N&rows=D&cols=C   DevicesResponse: stragglers, slowest, heat map
    GET /api/tiers?points=N    TiersResponse: ingress per tier and per node
    GET /api/alerts?limit=N    AlertsResponse: alerts fired, newest first

The page polls ``/api/metrics`` with the cursor it holds, so charts update without a
reload while a run writes its store. Bad query parameters give HTTP 400 naming the
parameter; an unreadable store gives 503 with the store's message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fedstrata.errors import DataError
from fedstrata.monitoring.dashboard._catalogue import GROUPS
from fedstrata.monitoring.dashboard._devices import DeviceViews
from fedstrata.monitoring.dashboard._source import RunSource
from fedstrata.monitoring.dashboard._views import (
    alerts_view,
    metrics_view,
    privacy_view,
    tier_ingress,
)
from fedstrata.monitoring.dashboard.models import (
    Budget,
    MetaResponse,
    MetricInfo,
    TiersResponse,
)

__all__ = ["create_app", "static_dir"]


def static_dir() -> Path:
    """The page and its vendored scripts (uPlot, with its licence)."""
    return Path(str(resources.files("fedstrata.monitoring.dashboard") / "static"))


class _BadParam(ValueError):
    pass


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParam(f"query parameter {name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise _BadParam(f"query parameter {name}={value} must be in [{lo}, {hi}]")
    return value


def _json(model: BaseModel) -> Response:
    return JSONResponse(model.model_dump(mode="json"))


Handler = Callable[[Request], BaseModel]


def _endpoint(handler: Handler) -> Callable[[Request], Response]:
    """A sync Starlette endpoint (run in the thread pool) mapping errors to 400/503."""

    def endpoint(request: Request) -> Response:
        try:
            return _json(handler(request))
        except _BadParam as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except DataError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    return endpoint


def create_app(source: RunSource, *, live: bool = False, poll_ms: int = 500) -> Starlette:
    """The dashboard over ``source``.

    Args:
        source: the run read (its store is closed when the app shuts down).
        live: the run is being written: the page keeps polling until it finishes.
        poll_ms: how often the page asks for new rounds.
    """
    devices = DeviceViews(source)
    budget = source.budget
    meta = _meta_handler(source, budget, live, poll_ms)

    def metrics(request: Request) -> BaseModel:
        since = _int_param(request, "since", -1, -1, 2**62)
        points = _int_param(request, "points", 500, 10, 10_000)
        return metrics_view(source.snapshot(), source.catalogue, since, points)

    def privacy(request: Request) -> BaseModel:
        points = _int_param(request, "points", 500, 10, 10_000)
        return privacy_view(source.snapshot(), budget, points)

    def device_view(request: Request) -> BaseModel:
        top = _int_param(request, "top", 20, 1, 1000)
        rows = _int_param(request, "rows", 50, 1, 500)
        cols = _int_param(request, "cols", 100, 1, 1000)
        return devices.view(source.snapshot(), top=top, rows=rows, cols=cols)

    def tiers(request: Request) -> BaseModel:
        points = _int_param(request, "points", 500, 10, 10_000)
        snap = source.snapshot()
        ingress = tier_ingress(snap, points)
        nodes = devices.tier_nodes(snap)
        return TiersResponse(tree=any(s.x for s in ingress.values()), ingress=ingress, nodes=nodes)

    def alerts(request: Request) -> BaseModel:
        limit = _int_param(request, "limit", 200, 1, 100_000)
        return alerts_view(source.snapshot(), source.catalogue, limit)

    def index(request: Request) -> Response:
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", index),
        Route("/api/meta", _endpoint(meta)),
        Route("/api/metrics", _endpoint(metrics)),
        Route("/api/privacy", _endpoint(privacy)),
        Route("/api/devices", _endpoint(device_view)),
        Route("/api/tiers", _endpoint(tiers)),
        Route("/api/alerts", _endpoint(alerts)),
        Mount("/static", StaticFiles(directory=static_dir()), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            devices.close()
            source.close()

    return Starlette(routes=routes, lifespan=lifespan)


def _meta_handler(source: RunSource, budget: Budget | None, live: bool, poll_ms: int) -> Handler:
    infos = [
        MetricInfo(key=d.key, group=d.group, title=d.title, unit=d.unit, formula=d.formula,
                   better=d.better)
        for d in source.catalogue.metrics
    ]  # fmt: skip

    def meta(request: Request) -> BaseModel:
        snap = source.snapshot()
        stored = source.store.meta()
        clients = stored.get("num_clients")
        return MetaResponse(
            run_id=stored.get("run_id", source.run_dir.name),
            run_dir=str(source.run_dir),
            live=live,
            finished=snap.finished,
            num_clients=None if clients is None else int(clients),
            groups=list(GROUPS),
            metrics=infos,
            budget=budget,
            poll_ms=poll_ms,
        )

    return meta
