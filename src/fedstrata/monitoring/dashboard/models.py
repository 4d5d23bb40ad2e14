"""The dashboard's JSON responses, as typed models (one per endpoint).

Every endpoint of :func:`~fedstrata.monitoring.dashboard.create_app` returns one of
these, serialised with ``model_dump(mode="json")``; a client (the page, a test) may
validate a response with ``Model.model_validate(json)``. Values that do not apply
(a metric without data in a round) are ``null``; NaN never reaches the JSON.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AlertRow",
    "AlertsResponse",
    "Budget",
    "DeviceRow",
    "DevicesResponse",
    "HeatMap",
    "MetaResponse",
    "MetricInfo",
    "MetricsResponse",
    "PrivacyResponse",
    "Series",
    "TierNode",
    "TiersResponse",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricInfo(_Model):
    """One of the twelve metrics (from the catalogue)."""

    key: str
    group: str
    title: str
    unit: str
    formula: str
    better: str


class Budget(_Model):
    """The privacy budget and the rounds it is planned over."""

    epsilon: float = Field(gt=0)
    planned_rounds: int = Field(ge=1)

    def allowed(self, round_idx: int) -> float:
        """The ε the plan allows by the end of ``round_idx``: the budget paced evenly,
        ``epsilon * min(1, (round_idx + 1) / planned_rounds)``."""
        return self.epsilon * min(1.0, (round_idx + 1) / self.planned_rounds)


class MetaResponse(_Model):
    """``GET /api/meta``: the run and what the page should draw."""

    run_id: str
    run_dir: str
    live: bool
    finished: bool
    num_clients: int | None
    groups: list[str]
    metrics: list[MetricInfo]
    budget: Budget | None
    poll_ms: int = Field(ge=50)


class Series(_Model):
    """One line: rounds and values (``null``: no value in that round)."""

    x: list[float]
    y: list[float | None]


class MetricsResponse(_Model):
    """``GET /api/metrics?since=R&points=N``: the metric series.

    ``full``: the series replace what the client holds (downsampled to at most
    ``points`` per metric); otherwise they hold only rounds after ``since``, to append.
    ``cursor``: the last round included (-1: none yet); pass it as the next ``since``.
    """

    cursor: int
    full: bool
    finished: bool
    rounds: int = Field(ge=0, description="rounds stored in the run")
    series: dict[str, Series]


class PrivacyResponse(_Model):
    """``GET /api/privacy``: ε spent against the budget and the plan."""

    enabled: bool
    budget_eps: float | None
    spent_eps: float | None
    planned_eps: float | None = Field(description="the linear plan's ε at the last round")
    round: int | None
    spent: Series
    plan: Series


class DeviceRow(_Model):
    """One device's figures over the run."""

    client_id: int
    rounds_selected: int
    rounds_completed: int
    straggler_rounds: int
    utilization_mean: float | None
    mean_compute_s: float | None
    mean_upload_s: float | None
    mean_round_s: float | None = Field(description="mean compute + upload seconds")
    tier: str | None
    straggler: bool


class HeatMap(_Model):
    """Utilization binned: ``values[i][j]`` is the mean over device bin i, round bin j."""

    device_starts: list[int] = Field(description="first client id of each device bin")
    round_starts: list[int] = Field(description="first round of each round bin")
    device_end: int = Field(ge=1, description="client ids run below this")
    round_end: int = Field(ge=1, description="rounds run below this")
    complete: bool = Field(description="every stored round is in (older ones still load)")
    values: list[list[float | None]]


class DevicesResponse(_Model):
    """``GET /api/devices?top=N``: stragglers, the slowest devices, the heat map."""

    devices: int = Field(ge=0)
    straggler_count: int = Field(ge=0)
    stragglers: list[DeviceRow]
    slowest: list[DeviceRow]
    heat: HeatMap | None


class TierNode(_Model):
    """One aggregation node's totals over the run."""

    node: str
    tier: str
    rounds: int
    ingress_bytes: int
    clients: int
    seconds: float


class TiersResponse(_Model):
    """``GET /api/tiers``: ingress per tier per round, and per node."""

    tree: bool
    ingress: dict[str, Series]
    nodes: list[TierNode]


class AlertRow(_Model):
    """One alert that fired."""

    rule: str
    round: int
    value: float
    severity: str
    message: str


class AlertsResponse(_Model):
    """``GET /api/alerts``: every alert over the run so far, newest first."""

    rules: int = Field(ge=0)
    alerts: list[AlertRow]
