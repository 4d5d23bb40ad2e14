"""Issue 16: the runtime center's and an aggregator tier's monitoring sinks."""

from __future__ import annotations

import asyncio

import pytest
from rthelpers import SMALL, free_port, tokens_for

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.monitoring import ClientFailure, MemorySink, RoundMetrics, RunStore
from fedstrata.monitoring.prometheus import PrometheusExporter
from fedstrata.monitoring.wiring import MonitoringSinks
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, deployment
from fedstrata.runtime.aggregator import TierAggregator
from fedstrata.runtime.commands import run_center
from fedstrata.runtime.monitor import TierMonitor, center_monitoring, tier_monitoring

LIMIT_S = 60.0


def test_the_centers_rounds_reach_its_monitoring_sinks(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rule = "[{name: AllRounds, metric: round_time_s, op: '>=', threshold: 0}]"
    cfg = load_config(overrides=[
        *SMALL, "output.run_store=true", f"output.dir={tmp_path}", "rounds.rounds=3",
        f"monitoring.tensorboard_dir={tmp_path / 'tb'}", f"monitoring.alerts={rule}",
    ])  # fmt: skip
    dep = deployment(cfg)
    tokens, port = tokens_for(6), free_port()

    async def client(cid):
        async with GrpcLink(f"127.0.0.1:{port}", cid, tokens[cid]) as link:
            await dep.client(link, cid).run()

    async def main():
        async with asyncio.TaskGroup() as tg:
            center = tg.create_task(
                run_center(cfg, address=f"127.0.0.1:{port}", tokens=TokenTable(tokens),
                           tls=None, mutual=False)
            )  # fmt: skip
            for cid in range(6):
                tg.create_task(client(cid))
        return center.result()

    result = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    assert result.run_dir is not None
    with RunStore.open(result.run_dir) as store:
        assert [(a.rule, a.round) for a in store.alerts()] == [("AllRounds", 0)]
        completion = [r.clients_completed / r.clients_selected for r in store.rounds()]
    acc = EventAccumulator(str(tmp_path / "tb" / result.run_dir.name))
    acc.Reload()
    scalars = acc.Scalars("reliability/completion_rate")
    assert [e.step for e in scalars] == [0, 1, 2]
    assert [e.value for e in scalars] == pytest.approx(completion)


def test_an_exporter_without_a_run_store_is_refused_on_the_center():
    cfg = load_config(overrides=[*SMALL, "monitoring.metrics_port=0"])
    with pytest.raises(ConfigError, match=r"monitoring\.metrics_port .* output\.run_store: true"):
        center_monitoring(cfg, None)
    plain = load_config(overrides=SMALL)
    assert center_monitoring(plain, None).sinks == ()  # alerts need the store: none here


def test_a_tier_exports_its_rounds_with_its_labels():
    cfg = load_config(overrides=[*SMALL, "rounds.clients_per_round=null", "name=tiered"])
    dep = deployment(cfg)
    n = dep.num_clients
    tokens = tokens_for(n + 1)
    exporter = PrometheusExporter("tiered", tier="edge", node=str(n))
    seen = MemorySink()
    monitor = TierMonitor(MonitoringSinks([exporter, seen], [exporter]))

    async def main():
        center = dep.center(participants=1)
        async with CenterServer(center, TokenTable(tokens)) as top:
            edge = dep.edge(n)
            async with CenterServer(edge, TokenTable(tokens)) as below:

                async def tier():
                    async with GrpcLink(top.target, n, tokens[n]) as link:
                        return await TierAggregator(link, edge, dep.size, monitor).run()

                async def client(cid):
                    async with GrpcLink(below.target, cid, tokens[cid]) as link:
                        return await dep.client(link, cid).run()

                async with asyncio.TaskGroup() as tg:
                    run = tg.create_task(center.run(dep.initial_params()))
                    report = tg.create_task(tier())
                    for cid in range(n):
                        tg.create_task(client(cid))
        return run.result(), report.result()

    _, report = asyncio.run(asyncio.wait_for(main(), LIMIT_S))
    monitor.close()
    rounds = [e for e in seen.events if isinstance(e, RoundMetrics)]
    assert [m.round_idx for m in rounds] == [0, 1]
    assert not [e for e in seen.events if isinstance(e, ClientFailure)]
    labels = {"run": "tiered", "tier": "edge", "node": str(n)}
    value = exporter.registry.get_sample_value
    assert value("fedstrata_rounds_total", labels) == 2
    assert value("fedstrata_bytes_up_total", labels) == sum(r.bytes_up for r in report.rounds)
    assert value("fedstrata_clients_total", {**labels, "outcome": "completed"}) == 2 * n
    assert value("fedstrata_completion_rate", labels) == 1.0


def test_tier_monitoring_is_only_the_exporter():
    assert tier_monitoring(load_config(overrides=SMALL), 7) is None
    cfg = load_config(overrides=[*SMALL, "monitoring.metrics_port=0"])
    monitor = tier_monitoring(cfg, 7)
    assert monitor is not None
    try:
        assert len(monitor.sinks.sinks) == 1  # the exporter, behind a fan-out
        assert monitor.sinks.exporter_url is not None
    finally:
        monitor.close()
