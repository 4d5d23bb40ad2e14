"""The twelve metrics of a tiny simulated federation against a hand computation.

Four clients with hand-set device profiles train for three rounds under a 6 s deadline:
client 1 is too slow (late), client 2 sends NaN (failed after its download), clients 0
and 3 are accepted. Each metric is recomputed below from the profiles with explicit
arithmetic and compared with :func:`federation_metrics` on the stored rounds; the run
store's per-device summary is checked the same way.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from fedstrata.algorithms import FedAvg
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.coordinator.round_logic import dense_bytes
from fedstrata.core import ArrayDataset, EvalResult, LocalPlan, ParamSpec, TrainResult
from fedstrata.core.metrics import PrivacySpent
from fedstrata.monitoring import RunStarted, RunStore
from fedstrata.monitoring.catalogue import METRICS, federation_metrics
from fedstrata.sim import ClientJob, InProcessExecutor, ProfileTable, SimSettings, Simulation

SIZES = (3, 4, 5, 6)  # client i holds SIZES[i] examples
FLOPS = (1e6, 0.5e6, 1e6, 4e6)  # device FLOP/s
FPE = 1e6  # the model's FLOPs per example
BPS, LATENCY, DEADLINE, ROUNDS = 8000.0, 0.5, 6.0, 3
NAN_CLIENT = 2


class _Data:
    num_clients = 4

    def client(self, cid: int) -> ArrayDataset:
        x = np.full((SIZES[cid], 4), float(cid), dtype=np.float32)
        return ArrayDataset(x, np.zeros(SIZES[cid], dtype=np.int64))

    def client_sizes(self) -> np.ndarray:
        return np.array(SIZES)


class _Trainer:
    spec = ParamSpec(("w",), ((4,),))
    flops_per_example = FPE

    def initial_params(self, seed: int) -> np.ndarray:
        return np.zeros(4, dtype=np.float32)

    def train(self, params, data, plan, ctx, out) -> TrainResult:  # type: ignore[no-untyped-def]
        out[:] = np.float32(plan.lr) * (data.x.mean(axis=0) - params)
        if ctx.client_id == NAN_CLIENT:
            out[0] = np.nan
        return TrainResult(len(data), 1, {"train_loss": 1.0})

    def evaluate(self, params, data) -> EvalResult:  # type: ignore[no-untyped-def]
        loss = float(np.square(params - 1.5).mean())
        return EvalResult(loss=loss, accuracy=1.0 / (1.0 + loss), num_examples=len(data))


class _Budget:
    """A privacy hook that reports 0.25 ε spent per round."""

    applies_every_round = False

    def start(self, round_idx: int) -> None:
        pass

    def aggregate(self, mean, accepted, ctx):  # type: ignore[no-untyped-def]
        return mean

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> PrivacySpent:
        spent = 0.25 * (round_idx + 1)
        return PrivacySpent(spent, 10.0 - spent, 1.0, 1.0)


def _run(run_dir: Path) -> RunStore:
    data, factory = _Data(), _Trainer
    job = ClientJob(trainer_factory=factory, data=data, root_seed=1)
    n = data.num_clients
    profiles = ProfileTable(
        flops=np.array(FLOPS), memory_gb=np.ones(n), uplink_bps=np.full(n, BPS),
        downlink_bps=np.full(n, BPS), latency_s=np.full(n, LATENCY), availability=np.ones(n),
    )  # fmt: skip
    store = RunStore.create(run_dir)
    store.emit(RunStarted("tiny", "{}", n, 4))
    executor = InProcessExecutor(job, 4)
    sim = Simulation(
        settings=SimSettings(ROUNDS, LocalPlan(lr=0.5), root_seed=1),
        coordinator=RoundCoordinator(RoundPolicy(None, 1, DEADLINE, 1)),
        trainer=factory(), executor=executor, client_sizes=data.client_sizes(),
        test_data=data.client(0), profiles=profiles, server_optimizer=FedAvg(),
        sinks=(store,), hooks=(_Budget(),),
    )  # fmt: skip
    try:
        sim.run(factory().initial_params(0))
    finally:
        executor.close()
    store.close()
    return RunStore.open(run_dir)


def test_the_twelve_metrics_match_a_hand_computation(tmp_path: Path) -> None:
    with _run(tmp_path / "run") as store:
        rounds = store.rounds()
        devices = store.device_stats()
    rows = federation_metrics(rounds)
    assert len(rows) == ROUNDS
    assert all(list(row) == [d.key for d in METRICS] for row in rows)

    d = dense_bytes(4)  # one dense model or update on the wire
    leg = LATENCY + d * 8 / BPS  # every download and upload: latency + bytes / rate
    compute = [SIZES[c] * FPE / FLOPS[c] for c in range(4)]  # 3, 8, 5, 1.5 s
    arrival = [leg + compute[c] + leg for c in range(4)]
    assert arrival[1] > DEADLINE > max(arrival[0], arrival[3])  # client 1 is late
    round_s = DEADLINE  # someone was late: the round ends at the deadline
    busy = [compute[0], DEADLINE - leg, 0.0, compute[3]]  # late: cut at the end; NaN: idle
    transfers = 4 + 3  # every client downloads; all but the NaN one upload
    accs = [m.accuracy for m in rounds]
    assert all(a is not None for a in accs)

    for r, (m, row) in enumerate(zip(rounds, rows, strict=True)):
        assert m.bytes_up == 3 * d
        assert m.bytes_down == 4 * d
        assert row["compression_ratio"] == pytest.approx(transfers * d / (3 * d + 4 * d))
        assert row["sync_share"] == pytest.approx((leg + leg) / round_s)  # client 0's legs
        capacity = transfers * (BPS / 8) * leg
        assert row["bandwidth_utilization"] == pytest.approx(transfers * d / capacity)
        assert row["device_utilization"] == pytest.approx(sum(busy) / (4 * round_s))
        assert row["round_time_s"] == pytest.approx(round_s)
        flops = SIZES[0] * FPE + SIZES[1] * FPE * busy[1] / compute[1] + SIZES[3] * FPE
        assert row["flop_efficiency"] == pytest.approx(flops / (sum(FLOPS) * round_s))
        assert row["privacy_spent_eps"] == pytest.approx(0.25 * (r + 1))
        assert row["completion_rate"] == pytest.approx(2 / 4)
        # the first failure: client 2, once downloaded; the next accepted: client 3
        assert row["recovery_time_s"] == pytest.approx(arrival[3] - leg)
        assert row["contention"] == 0.0  # the flat simulator models no shared link

    assert rows[0]["convergence_speed"] is None
    assert rows[1]["convergence_speed"] == pytest.approx(accs[1] - accs[0])
    assert rows[2]["convergence_speed"] == pytest.approx((accs[2] - accs[0]) / 2)
    assert rows[1]["accuracy_fluctuation"] is None
    deltas = [accs[1] - accs[0], accs[2] - accs[1]]
    assert rows[2]["accuracy_fluctuation"] == pytest.approx(statistics.pstdev(deltas))

    # per device: selected every round; client 1 straggles (late) every round
    assert [s.client_id for s in devices] == [0, 1, 2, 3]
    assert [s.rounds_selected for s in devices] == [ROUNDS] * 4
    assert [s.rounds_completed for s in devices] == [ROUNDS, 0, 0, ROUNDS]
    assert [s.straggler_rounds for s in devices] == [0, ROUNDS, 0, 0]
    for c, s in enumerate(devices):
        assert s.utilization_mean == pytest.approx(busy[c] / round_s)
        assert s.mean_compute_s == pytest.approx(busy[c])
        assert s.mean_upload_s == pytest.approx(0.0 if c == NAN_CLIENT else leg)
