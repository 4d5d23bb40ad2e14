"""``scheduling.stragglers: drop`` in deployment (FedAvg's and FedScale's rule): no
client is told to stop early; the center closes the round at the deadline and records
a member that has not arrived as a dropped straggler, as the simulator does; its late
upload is refused and does not count in the next round."""

from __future__ import annotations

import asyncio

import pytest
from rthelpers import SMALL, tokens_for

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.config.compat import RUNTIME
from fedstrata.runtime import CenterServer, GrpcLink, TokenTable, check_supported, deployment
from fedstrata.runtime.scheduling import DeviceReport
from fedstrata.runtime.secagg_wire import Phase
from fedstrata.scheduling import Registry, WorkStatus

SLOW = 3  # its uploads wait until the round has closed: it arrives after the deadline
DEADLINE_S = 3.0


class _ArrivesLate:
    """A client link whose uploads go out only once the center closed their round (the
    device ran its whole plan and missed the deadline)."""

    def __init__(self, link, center) -> None:
        self.link, self.center = link, center
        self.sent: list[tuple[int, object]] = []

    def __getattr__(self, name):
        return getattr(self.link, name)

    async def _closed(self, round_idx: int) -> None:
        coordinator = self.center.coordinator
        while coordinator.round_idx == round_idx and coordinator.in_flight:
            await asyncio.sleep(0.01)

    async def submit(self, round_idx, payload, num_examples, metrics, timings=None):
        await self._closed(round_idx)
        self.sent.append((round_idx, timings))
        return await self.link.submit(round_idx, payload, num_examples, metrics, timings)

    async def secagg_step(self, round_idx, phase, data, **kw):
        if phase == Phase.INPUT and data:  # the masked input (key agreement went on)
            await self._closed(round_idx)
            self.sent.append((round_idx, kw.get("timings")))
        return await self.link.secagg_step(round_idx, phase, data, **kw)


def _profile(dep, cid: int) -> DeviceReport:
    return DeviceReport(1e3, 4.0, 1.0, 1000.0, 1000.0, local_examples=len(dep.local_data(cid)))


async def _federation(dep):
    n = dep.num_clients
    tokens = tokens_for(n)
    center = dep.center()
    late: list[_ArrivesLate] = []
    async with CenterServer(center, TokenTable(tokens)) as server:

        async def one(cid):
            async with GrpcLink(server.target, cid, tokens[cid]) as link:
                used = link
                if cid == SLOW:
                    used = _ArrivesLate(link, center)
                    late.append(used)
                return await dep.client(used, cid, profile=_profile(dep, cid)).run()  # type: ignore[arg-type]

        async with asyncio.TaskGroup() as tg:
            main = tg.create_task(center.run(dep.initial_params()))
            clients = [tg.create_task(one(cid)) for cid in range(n)]
    return main.result(), center, late[0], clients[SLOW].result()


@pytest.mark.parametrize(
    "secure", [[], ["secagg.enabled=true", "secagg.dropout_rate=0.2"]], ids=["plain", "secagg"]
)
def test_a_late_client_runs_its_whole_plan_and_is_dropped_at_the_deadline(tmp_path, secure):
    """Under secure aggregation the late client is a protocol dropout (its masks are
    recovered from its neighbours' shares) and its masked input is refused."""
    cfg = load_config(
        overrides=[
            *SMALL, "rounds.clients_per_round=null", f"rounds.deadline_s={DEADLINE_S}",
            "scheduling.stragglers=drop", f"scheduling.registry_url={tmp_path / 'devices.db'}",
            *secure,
        ]
    )  # fmt: skip
    assert "drop_stragglers" in RUNTIME.supports
    check_supported(cfg)
    dep = deployment(cfg)
    result, center, late, report = asyncio.run(_federation(dep))
    assert center.scheduler is not None
    assert center.scheduler.partial is None  # no client is told to stop at the deadline
    per = min(cfg.client.batch_size, len(dep.local_data(SLOW)))
    # its whole plan (client.steps=3), reported as full work, after the round closed
    assert [r for r, _ in late.sent] == [0, 1]
    for _, timings in late.sent:
        assert timings.steps is None
        assert timings.examples == 3 * per
    assert [r for r, why in report.refused if "late" in why] == [0, 1]
    for record in result.rounds:
        assert SLOW in record.outcome.late
        assert SLOW not in record.outcome.accepted
        assert len(record.outcome.accepted) == dep.num_clients - 1
        assert record.schedule is not None
        assert (record.schedule.dropped, record.schedule.partial) == (1, 0)
        assert record.schedule.mean_steps == 3.0  # equal work: the plan, never cut
    with Registry.open(tmp_path / "devices.db") as reg:
        history = reg.history()
    mine = history.device_id == SLOW
    assert history.status[mine].tolist() == [WorkStatus.DROPPED] * 2
    assert history.completed_work[mine].tolist() == [0, 0]
    assert (history.status[~mine] == WorkStatus.COMPLETED).all()
    # the simulator replaying the record (the straggler out of each round) computes the
    # deployment's model bit for bit
    sim_cfg = cfg.model_copy(
        update={"scheduling": cfg.scheduling.model_copy(
            update={"registry_url": None, "replay_url": str(tmp_path / "devices.db")}
        )}
    )  # fmt: skip
    sim = run(sim_cfg).simulation
    assert [r.clients_completed for r in sim.rounds] == [dep.num_clients - 1] * 2
    assert result.params.tobytes() == sim.params.tobytes()
