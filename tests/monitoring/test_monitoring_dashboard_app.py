"""The dashboard's JSON endpoints, served by uvicorn on a free port, over a store that a
writer in the same test keeps appending to (the live case) or that is finished."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedstrata.core.metrics import PrivacySpent, TierStats
from fedstrata.core.metrics_system import SystemStats
from fedstrata.errors import DataError
from fedstrata.monitoring import RunStarted, RunStore
from fedstrata.monitoring.catalogue import METRICS
from fedstrata.monitoring.dashboard import (
    BackgroundServer,
    Budget,
    RunSource,
    create_app,
    default_catalogue,
    find_run_dir,
)
from fedstrata.monitoring.dashboard.models import (
    AlertsResponse,
    DevicesResponse,
    MetaResponse,
    MetricsResponse,
    PrivacyResponse,
    TiersResponse,
)
from fedstrata.monitoring.devices import DeviceRound, NodeRound, RoundDetail

BUDGET = Budget(epsilon=4.0, planned_rounds=20)


def _round(make_metrics: Any, r: int, *, eps_per_round: float = 0.1) -> Any:
    """A round with system figures, privacy, tier ingress, and a failing cohort late on."""
    completed = 10 if r < 6 else 5
    m = make_metrics(r, clients_completed=completed, clients_failed=10 - completed, clients_late=0)
    system = SystemStats(devices=10, dense_bytes=50_000, busy_s=60.0, transfer_s=30.0)
    privacy = PrivacySpent(eps_per_round * (r + 1), 4.0 - eps_per_round * (r + 1), 1.0, 0.1)
    tiers = TierStats(100 * r, 200 * r, 400 * r, 2, 10)
    return m.with_stats(system, privacy, tiers)


def _detail(r: int) -> RoundDetail:
    devices = tuple(
        DeviceRound(c, "accepted" if c != 7 else "late", 1.0, 2.0 + 3 * (c == 7), 1.0,
                    straggler=c == 7, utilization=0.1 * c, node=f"edge{c % 2}")
        for c in range(10)
    )  # fmt: skip
    nodes = (
        NodeRound("edge0", "edge", 500, 5, 4.0),
        NodeRound("edge1", "edge", 500, 5, 9.0),
        NodeRound("center", "center", 100, 10, 9.5),
    )
    return RoundDetail(r, devices, nodes)


class Writer:
    """A run being written: ``add(n)`` stores n more rounds (with device details)."""

    def __init__(self, run_dir: Path, make_metrics: Any, eps_per_round: float = 0.1) -> None:
        self.store = RunStore.create(run_dir)
        self.store.emit(RunStarted("live-demo", "rounds: 20\n", num_clients=10, num_params=7))
        self.next = 0
        self._make = make_metrics
        self._eps = eps_per_round

    def add(self, n: int) -> None:
        for _ in range(n):
            self.store.emit(_detail(self.next))
            self.store.emit(_round(self._make, self.next, eps_per_round=self._eps))
            self.next += 1


@pytest.fixture
def writer(tmp_path: Path, make_metrics: Any) -> Iterator[Writer]:
    w = Writer(tmp_path / "run", make_metrics)
    yield w
    w.store.close()


@pytest.fixture
def served(writer: Writer) -> Iterator[str]:
    store = RunStore.open(writer.store.path)
    source = RunSource(store, default_catalogue(), budget=BUDGET, min_interval_s=0)
    with BackgroundServer(create_app(source, live=True)) as server:
        yield server.url


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_meta_lists_the_twelve_metrics_in_four_groups(served: str) -> None:
    meta = MetaResponse.model_validate(get(served + "api/meta"))
    assert meta.run_id == "live-demo"
    assert meta.live
    assert not meta.finished
    assert [m.key for m in meta.metrics] == [d.key for d in METRICS]
    assert meta.groups == ["communication", "compute", "quality", "reliability"]
    assert meta.budget == BUDGET


def test_metrics_since_cursor_returns_only_new_rounds(served: str, writer: Writer) -> None:
    empty = MetricsResponse.model_validate(get(served + "api/metrics?since=-1"))
    assert empty.cursor == -1
    assert empty.rounds == 0
    writer.add(4)
    first = MetricsResponse.model_validate(get(served + "api/metrics?since=-1"))
    assert first.full
    assert first.cursor == 3
    assert first.series["round_time_s"].x == [0, 1, 2, 3]
    assert first.series["completion_rate"].y == [1.0, 1.0, 1.0, 1.0]
    assert first.series["flop_efficiency"].x == []  # no peak FLOP/s recorded: not applicable
    writer.add(3)
    more = MetricsResponse.model_validate(get(served + "api/metrics?since=3"))
    assert not more.full
    assert more.cursor == 6
    assert more.series["round_time_s"].x == [4, 5, 6]
    assert more.series["completion_rate"].y == [1.0, 1.0, 0.5]
    again = MetricsResponse.model_validate(get(served + "api/metrics?since=6"))
    assert again.series["round_time_s"].x == []


def test_metrics_are_downsampled_to_the_points_asked(served: str, writer: Writer) -> None:
    writer.add(40)
    resp = MetricsResponse.model_validate(get(served + "api/metrics?since=-1&points=10"))
    assert resp.rounds == 40
    xs = resp.series["privacy_spent_eps"].x
    assert len(xs) == 10
    assert xs[0] == 0
    assert xs[-1] == 39


def test_privacy_gauge_against_the_linear_plan(served: str, writer: Writer) -> None:
    writer.add(5)
    p = PrivacyResponse.model_validate(get(served + "api/privacy"))
    assert p.enabled
    assert p.budget_eps == 4.0
    assert p.spent_eps == pytest.approx(0.5)
    assert p.round == 4
    assert p.planned_eps == pytest.approx(4.0 * 5 / 20)
    assert p.plan.y[0] == pytest.approx(0.2)


def test_alerts_fire_when_completion_drops(served: str, writer: Writer) -> None:
    writer.add(8)
    alerts = AlertsResponse.model_validate(get(served + "api/alerts"))
    rules = {a.rule for a in alerts.alerts}
    assert "CompletionRateLow" in rules
    low = next(a for a in alerts.alerts if a.rule == "CompletionRateLow")
    assert low.round == 7  # completion 0.5 from round 6; the rule needs 2 rounds
    assert low.value == pytest.approx(0.5)


def test_devices_view_ranks_stragglers_and_bins_the_heat_map(served: str, writer: Writer) -> None:
    writer.add(6)
    d = DevicesResponse.model_validate(get(served + "api/devices?top=3&rows=5&cols=3"))
    deadline = time.monotonic() + 30
    while (d.heat is None or not d.heat.complete) and time.monotonic() < deadline:
        d = DevicesResponse.model_validate(get(served + "api/devices?top=3&rows=5&cols=3"))
    assert d.devices == 10
    assert d.straggler_count == 1
    assert [r.client_id for r in d.stragglers] == [7]
    assert d.stragglers[0].straggler_rounds == 6
    assert d.slowest[0].client_id == 7
    assert d.slowest[0].straggler
    assert not d.slowest[1].straggler
    heat = d.heat
    assert heat is not None
    assert heat.round_starts == [0, 2, 4]
    assert heat.round_end == 6
    assert len(heat.values) == len(heat.device_starts) <= 5
    first_bin = heat.values[0][0]  # clients 0..1: utilizations 0.0 and 0.1
    assert first_bin == pytest.approx(0.05)
    writer.add(2)
    later = DevicesResponse.model_validate(get(served + "api/devices?rows=5&cols=8"))
    assert later.heat is not None
    assert later.heat.round_end == 8
    assert later.heat.values[-1][-1] == pytest.approx(0.85)  # clients 8..9


def test_tiers_view_sums_ingress_per_node(served: str, writer: Writer) -> None:
    writer.add(3)
    t = TiersResponse.model_validate(get(served + "api/tiers"))
    assert t.tree
    assert t.ingress["edge"].y == [0.0, 400.0, 800.0]
    nodes = {n.node: n for n in t.nodes}
    assert [n.tier for n in t.nodes] == ["center", "edge", "edge"]
    assert nodes["edge1"].ingress_bytes == 1500
    assert nodes["edge1"].rounds == 3


def test_bad_parameters_are_refused_with_their_name(served: str) -> None:
    for query, name in (("api/metrics?since=x", "since"), ("api/devices?top=0", "top")):
        with pytest.raises(urllib.error.HTTPError) as info:
            get(served + query)
        assert info.value.code == 400
        assert name in json.loads(info.value.read())["error"]


def test_the_page_and_vendored_charting_library_are_served(served: str) -> None:
    with urllib.request.urlopen(served, timeout=10) as response:
        page = response.read().decode()
    assert "static/uPlot.iife.min.js" in page
    assert "cdn" not in page.lower()
    with urllib.request.urlopen(served + "static/uPlot.iife.min.js", timeout=10) as response:
        assert b"uPlot" in response.read(200)


def test_find_run_dir_follows_the_newest_run(tmp_path: Path, writer: Writer) -> None:
    assert find_run_dir(writer.store.path) == writer.store.path
    assert find_run_dir(writer.store.path.parent) == writer.store.path
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds none"):
        find_run_dir(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        find_run_dir(tmp_path / "missing")


def test_spending_ahead_of_the_plan_raises_the_critical_alert(
    tmp_path: Path, make_metrics: Any
) -> None:
    fast = Writer(tmp_path / "fast", make_metrics, eps_per_round=0.3)
    try:
        fast.add(3)
        store = RunStore.open(fast.store.path)
        source = RunSource(store, default_catalogue(), budget=BUDGET, min_interval_s=0)
        with BackgroundServer(create_app(source)) as server:
            alerts = AlertsResponse.model_validate(get(server.url + "api/alerts"))
            privacy = PrivacyResponse.model_validate(get(server.url + "api/privacy"))
    finally:
        fast.store.close()
    ahead = [a for a in alerts.alerts if a.rule == "PrivacyAheadOfPlan"]
    assert [(a.round, a.severity) for a in ahead] == [(0, "critical")]
    assert ahead[0].value == pytest.approx(0.3 / (4.0 / 20))
    assert privacy.spent_eps == pytest.approx(0.9)
    assert privacy.planned_eps == pytest.approx(0.6)


def test_a_finished_run_says_so(served: str, writer: Writer) -> None:
    writer.add(2)
    assert not MetricsResponse.model_validate(get(served + "api/metrics")).finished
    writer.store.close()  # writes summary.json: the run is over
    assert MetricsResponse.model_validate(get(served + "api/metrics?since=1")).finished
    assert MetaResponse.model_validate(get(served + "api/meta")).finished


def test_an_unreadable_store_answers_503_with_its_message(writer: Writer) -> None:
    store = RunStore.open(writer.store.path)
    source = RunSource(store, default_catalogue(), min_interval_s=0)
    with BackgroundServer(create_app(source)) as server:
        store.close()
        with pytest.raises(urllib.error.HTTPError) as info:
            get(server.url + "api/metrics")
    assert info.value.code == 503
    assert "store is closed" in json.loads(info.value.read())["error"]
