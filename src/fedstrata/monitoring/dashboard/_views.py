"""The round-level views: metric series, privacy budget, tier ingress, alerts.

Pure functions from a :class:`~._source.Snapshot` to the typed responses of
:mod:`.models`. Series drop rounds where a value does not apply (None / NaN); a full
series longer than ``points`` is downsampled with :func:`~._downsample.lttb`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedstrata.monitoring.dashboard._catalogue import Catalogue
from fedstrata.monitoring.dashboard._downsample import lttb
from fedstrata.monitoring.dashboard._source import Snapshot
from fedstrata.monitoring.dashboard.models import (
    AlertRow,
    AlertsResponse,
    Budget,
    MetricsResponse,
    PrivacyResponse,
    Series,
)

__all__ = ["alerts_view", "metrics_view", "privacy_view", "series", "tier_ingress"]

_TIERS = ("center", "region", "edge")


def series(xs: Sequence[int], ys: Sequence[float | None], points: int | None) -> Series:
    """The finite points of ``(xs, ys)``; at most ``points`` of them (LTTB) if given."""
    keep = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=True)
        if y is not None and math.isfinite(y)
    ]
    if points is not None and len(keep) > points:
        arr = np.asarray(keep, dtype=np.float64)
        idx = lttb(arr[:, 0], arr[:, 1], points)
        keep = [keep[i] for i in idx]
    return Series(x=[x for x, _ in keep], y=[y for _, y in keep])


def metrics_view(snap: Snapshot, catalogue: Catalogue, since: int, points: int) -> MetricsResponse:
    """The twelve metric series: after ``since`` to append, else all (downsampled).

    The client holds rounds up to ``since``; when ``since`` is -1 or not a round the
    snapshot knows (an older store, a restarted run), the whole series comes back.
    """
    first = snap.rounds[0].round_idx if snap.rounds else 0
    full = since < first or since > snap.cursor
    start = 0 if full else _position_after(snap, since)
    xs = [m.round_idx for m in snap.rounds[start:]]
    rows = snap.rows[start:]
    out = {
        d.key: series(xs, [row.get(d.key) for row in rows], points if full else None)
        for d in catalogue.metrics
    }
    return MetricsResponse(
        cursor=snap.cursor,
        full=full,
        finished=snap.finished,
        rounds=len(snap.rounds),
        series=out,
    )


def _position_after(snap: Snapshot, since: int) -> int:
    """Index of the first round after ``since`` (rounds are sorted by index)."""
    indices = [m.round_idx for m in snap.rounds]
    return int(np.searchsorted(np.asarray(indices), since, side="right"))


def privacy_view(snap: Snapshot, budget: Budget | None, points: int) -> PrivacyResponse:
    """ε spent per round against the budget and a linear plan over the planned rounds.

    The plan at round r is ``epsilon * min(1, (r + 1) / planned_rounds)``: spending
    ahead of it means the budget runs out before the planned rounds end.
    """
    spent = [(m.round_idx, m.privacy.epsilon_spent) for m in snap.rounds if m.privacy]
    xs = [r for r, _ in spent]
    plan_ys: list[float | None] = [_planned(budget, r) for r in xs]
    last = spent[-1] if spent else None
    return PrivacyResponse(
        enabled=bool(spent) or budget is not None,
        budget_eps=None if budget is None else budget.epsilon,
        spent_eps=None if last is None else last[1],
        planned_eps=None if last is None else _planned(budget, last[0]),
        round=None if last is None else last[0],
        spent=series(xs, [e for _, e in spent], points),
        plan=series(xs, plan_ys, points),
    )


def _planned(budget: Budget | None, round_idx: int) -> float | None:
    return None if budget is None else budget.allowed(round_idx)


def tier_ingress(snap: Snapshot, points: int) -> dict[str, Series]:
    """Bytes into the center, the regions and the edges per round (tree rounds only)."""
    tree = [(m.round_idx, m.tiers) for m in snap.rounds if m.tiers is not None]
    xs = [r for r, _ in tree]
    columns: dict[str, list[float | None]] = {
        "center": [float(t.center_ingress_bytes) for _, t in tree],
        "region": [float(t.region_ingress_bytes) for _, t in tree],
        "edge": [float(t.edge_ingress_bytes) for _, t in tree],
    }
    return {tier: series(xs, columns[tier], points) for tier in _TIERS}


def alerts_view(snap: Snapshot, catalogue: Catalogue, limit: int) -> AlertsResponse:
    """The newest ``limit`` alerts, newest first."""
    newest = sorted(snap.alerts, key=lambda a: a.round, reverse=True)[:limit]
    return AlertsResponse(
        rules=len(catalogue.rules),
        alerts=[
            AlertRow(
                rule=a.rule,
                round=a.round,
                value=a.value if math.isfinite(a.value) else 0.0,
                severity=a.severity,
                message=a.message,
            )
            for a in newest
        ],
    )
