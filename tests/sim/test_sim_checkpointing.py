"""Issue 15 part 2: each stateful piece saves and restores its state exactly, and what
cannot be saved is refused, not skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstrata.algorithms.server import FedAdam, FedAvg
from fedstrata.checkpoint.snapshot import EngineSnapshot
from fedstrata.compress import CompressionSpec
from fedstrata.coordinator import RoundCoordinator, RoundPolicy
from fedstrata.coordinator.buffered import Buffering
from fedstrata.coordinator.topology import Tier, Topology, TopologyNode
from fedstrata.core.context import RoundContext
from fedstrata.core.state import DiskStateStore, MemoryStateStore
from fedstrata.core.state_files import StateDirSnapshot
from fedstrata.errors import CheckpointCorrupt, CheckpointError
from fedstrata.privacy.allocator import BudgetAllocator
from fedstrata.scheduling.fedbuff import FedBuffConfig
from fedstrata.sim.checkpointing import Components, engine_parts, restore_engine
from fedstrata.sim.hooks import CompressedBroadcast, DenseBroadcast


def _components(hooks=(), planner=None, optimizer=None, driver="flat") -> Components:
    coordinator = RoundCoordinator(RoundPolicy(root_seed=3))
    return Components(
        driver, coordinator, hooks, DenseBroadcast(4), planner, optimizer or FedAvg()
    )


def test_engine_parts_survive_the_blob_and_restore_the_optimizer_state() -> None:
    params = np.arange(4, dtype=np.float32)
    opt = FedAdam()
    state = opt.init(params)
    parts = engine_parts(_components(optimizer=opt), 2, 12.5, params, state)
    back = EngineSnapshot.from_bytes(EngineSnapshot(2, "flat", "d", parts).to_bytes())
    fresh = _components(optimizer=opt)
    at = restore_engine(fresh, back.parts, 4)
    assert (at.rounds_done, at.clock_s) == (2, 12.5)
    assert at.params.tobytes() == params.tobytes()
    assert at.opt_state.m.tobytes() == state.m.tobytes()  # type: ignore[attr-defined]
    assert fresh.coordinator.state_dict().value("round") == -1  # none run before round 2


def test_restore_refuses_another_driver_size_or_hook_set() -> None:
    params = np.zeros(4, dtype=np.float32)
    parts = engine_parts(_components(), 1, 0.0, params, FedAvg().init(params))
    with pytest.raises(CheckpointCorrupt, match="tree"):
        restore_engine(_components(driver="tree"), parts, 4)
    with pytest.raises(CheckpointCorrupt, match=r"expected float32 \(5,\)"):
        restore_engine(_components(), parts, 5)
    alloc = BudgetAllocator.uniform(2.0, 1e-5, 10, 0.1)
    hook = _Hook(alloc)
    with pytest.raises(CheckpointCorrupt, match="round hooks"):
        restore_engine(_components(hooks=(hook,)), parts, 4)


class _Hook:
    """A round hook whose state is a budget allocator's."""

    def __init__(self, allocator: BudgetAllocator) -> None:
        self.allocator = allocator

    def state_dict(self):
        return self.allocator.state_dict()

    def load_state_dict(self, part) -> None:
        self.allocator.load_state_dict(part)


def test_components_that_cannot_be_saved_are_refused() -> None:
    params = np.zeros(4, dtype=np.float32)
    with pytest.raises(CheckpointError, match="scheduling planner"):
        engine_parts(_components(planner=object()), 1, 0.0, params, FedAvg().init(params))
    with pytest.raises(CheckpointError, match="round hook object has no state_dict"):
        engine_parts(_components(hooks=(object(),)), 1, 0.0, params, FedAvg().init(params))
    buffered = RoundCoordinator(
        RoundPolicy(), buffering=Buffering(2, FedBuffConfig(buffer_size=2))
    )
    with pytest.raises(CheckpointError, match="buffered"):
        buffered.state_dict()


def test_allocator_state_keeps_epsilon_spent_exactly() -> None:
    alloc = BudgetAllocator(4.0, 1e-5, 12, 0.2)
    for r in range(5):
        alloc.record(r)
    alloc.observe_progress(1.25)
    fresh = BudgetAllocator(4.0, 1e-5, 12, 0.2)
    snap = EngineSnapshot(5, "flat", "d", {"a": alloc.state_dict()}).to_bytes()
    fresh.load_state_dict(EngineSnapshot.from_bytes(snap).part("a"))
    assert fresh.epsilon_spent == alloc.epsilon_spent
    assert fresh.record(5).epsilon_spent == alloc.record(5).epsilon_spent
    assert fresh.plan == alloc.plan


def test_compressed_broadcast_resumes_its_downloads_exactly() -> None:
    spec = CompressionSpec(sparsify="topk", density=0.25, quantize=8)
    rng = np.random.default_rng(0)
    start = rng.standard_normal(16).astype(np.float32)
    bc = CompressedBroadcast(start, spec, history=2)
    for r in range(3):
        bc.download_bytes(r)
        bc.publish(start + r + 1, RoundContext(r, 0))
    part = EngineSnapshot.from_bytes(
        EngineSnapshot(3, "flat", "d", {"b": bc.state_dict()}).to_bytes()
    )
    again = CompressedBroadcast(start, spec, history=2)
    again.load_state_dict(part.part("b"))
    assert again.model_for_clients(start).tobytes() == bc.model_for_clients(start).tobytes()
    assert [again.download_bytes(c) for c in range(4)] == [bc.download_bytes(c) for c in range(4)]


def test_state_dir_snapshot_rereads_only_changed_files_and_restores_exactly(
    tmp_path: Path,
) -> None:
    store = DiskStateStore(tmp_path / "state")
    store.put(1, "residual", np.ones(3, dtype=np.float32))
    store.put(2, "residual", np.full(3, 2.0, dtype=np.float32))
    snap = StateDirSnapshot(tmp_path / "state")
    first = snap.capture()
    store.put(2, "residual", np.full(3, 9.0, dtype=np.float32))  # the next round
    store.put(3, "residual", np.zeros(3, dtype=np.float32))
    second = snap.capture()
    assert second.array("f0") is first.array("f0")  # client 1 unchanged: cached
    StateDirSnapshot(tmp_path / "state").restore(first)  # back to the first capture
    assert store.get(2, "residual").tolist() == [2.0, 2.0, 2.0]
    assert store.get(3, "residual") is None
    with pytest.raises(CheckpointCorrupt, match="not allowed"):
        snap.restore(type(first)(meta={"files": ["../x.npy"]}, arrays={"f0": first.array("f0")}))


def test_memory_store_and_topology_round_trip() -> None:
    mem = MemoryStateStore()
    mem.put(4, "partial_ef", np.arange(3, dtype=np.float32))
    again = MemoryStateStore()
    again.load_state_dict(mem.state_dict())
    assert again.get(4, "partial_ef").tolist() == [0.0, 1.0, 2.0]
    edge = TopologyNode("edge-0", Tier.EDGE, clients=(1, 2))
    tree = Topology(TopologyNode("center", Tier.CENTER, (edge,), (0,)))
    assert Topology.from_json(tree.to_json()) == tree
