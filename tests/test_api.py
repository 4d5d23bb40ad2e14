"""End-to-end runs through the public API with the real PyTorch trainer."""

import numpy as np
import pytest

from fedstrata.api import choose_workers, run
from fedstrata.config import load_config
from fedstrata.errors import ConfigError, DataError

SMALL = [
    "output.run_store=false",
    "rounds.rounds=2",
    "data.num_clients=16",
    "rounds.clients_per_round=10",
]


@pytest.mark.parametrize("workers", [1, 2])
def test_same_seed_gives_bit_identical_models_for_any_worker_count(workers):
    ref = run(load_config(overrides=[*SMALL, "sim.workers=0"]))
    got = run(load_config(overrides=[*SMALL, f"sim.workers={workers}"]))
    assert got.workers == workers
    assert ref.simulation.params.tobytes() == got.simulation.params.tobytes()
    assert [m.accuracy for m in ref.simulation.rounds] == [
        m.accuracy for m in got.simulation.rounds
    ]


def test_other_seed_gives_another_model():
    a = run(load_config(overrides=SMALL))
    b = run(load_config(overrides=[*SMALL, "seed=1"]))
    assert not np.array_equal(a.simulation.params, b.simulation.params)


def test_users_npz_folder_trains(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(6):
        y = rng.integers(0, 3, 20)
        x = (rng.standard_normal((20, 5)) + y[:, None]).astype(np.float32)
        np.savez(tmp_path / f"client_{c}.npz", x=x, y=y)
    cfg = load_config(
        overrides=[
            "output.run_store=false",
            "data.name=npz",
            f"data.path={tmp_path}",
            "model.kind=logreg",
            "rounds.rounds=20",
            "client.lr=0.1",
        ]
    )
    result = run(cfg)
    assert result.simulation.final_accuracy > 0.6


def test_broken_npz_folder_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "client_0.npz", x=np.zeros((3, 2), np.float32))  # no labels
    cfg = load_config(
        overrides=["output.run_store=false", "data.name=npz", f"data.path={tmp_path}"]
    )
    with pytest.raises(DataError, match=r"client_0\.npz"):
        run(cfg)


def test_auto_workers_uses_cores_minus_one_or_none():
    cfg = load_config()
    assert choose_workers(cfg, 1) == 0
    assert choose_workers(load_config(overrides=["sim.workers=3"]), 100) == 3
    assert choose_workers(load_config(overrides=["sim.start_method=inprocess"]), 100) == 0


def test_cohort_larger_than_population_is_rejected():
    with pytest.raises(ConfigError, match=r"exceeds data\.num_clients"):
        load_config(overrides=["data.num_clients=5", "rounds.clients_per_round=6"])


def test_secure_aggregation_runs_end_to_end_and_reports_its_cost():
    cfg = load_config(overrides=[*SMALL, "secagg.enabled=true"])
    plain = run(load_config(overrides=SMALL))
    secure = run(cfg)
    stats = secure.simulation.rounds[-1].secagg
    assert stats is not None
    assert stats.protocol_s > 0
    assert stats.bandwidth_expansion < 1.5
    # 16-bit fixed point: the model stays close to float FedAvg
    diff = np.abs(secure.simulation.params - plain.simulation.params).max()
    assert diff < 1e-3


def test_secure_aggregation_refuses_what_it_cannot_combine_with():
    with pytest.raises(ConfigError, match="support differs"):  # Issue 12 part 4
        load_config(
            overrides=[
                "secagg.enabled=true",
                "compression.sparsify=topk",
                "compression.density=0.1",
            ]
        )
    int8 = load_config(overrides=["secagg.enabled=true", "compression.preset=int8"])
    assert int8.secagg.ring_spec(int8.compression.spec()).input_bits == 8  # composes now
    with pytest.raises(ConfigError, match="secure aggregation reveals only their sum"):
        load_config(overrides=["secagg.enabled=true", "server.aggregator=median"])


def test_hierarchical_run_and_plan():
    from fedstrata.api.plan import describe_plan

    tree = [*SMALL, "rounds.clients_per_round=null", "topology.mode=explicit"]
    explicit = {"r0": {"e0": list(range(8)), "e1": list(range(8, 16))}}
    cfg = load_config(overrides=[*tree, f"topology.regions={explicit}"])
    result = run(cfg)
    last = result.simulation.rounds[-1]
    assert last.clients_completed == 16
    # the center receives one partial aggregate per region, not 16 client updates
    assert last.tiers.center_ingress_bytes * 8 < last.bytes_up
    text = describe_plan(cfg)
    assert "region r0: 16 clients" in text
    assert "predicted global round, flat" in text


def test_explicit_topology_must_list_every_client():
    bad = {"r0": {"e0": [0, 1, 2]}}
    tree = [*SMALL, "rounds.clients_per_round=null", "topology.mode=explicit"]
    cfg = load_config(overrides=[*tree, f"topology.regions={bad}"])
    with pytest.raises(ConfigError, match="every client"):
        run(cfg)
