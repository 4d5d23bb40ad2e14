"""Issue 14 part 1 (FedBN): ``Task.local_buffers`` are kept per client, across rounds
and worker processes (Li et al., "FedBN: Federated Learning on Non-IID Features via
Local Batch Normalization", ICLR 2021)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torch import nn

from fedstrata.api import run
from fedstrata.api.runner import RunResult
from fedstrata.config import load_config
from fedstrata.torch_adapter import Task, TorchTrainer

DIM, N, ROUNDS = 4, 16, 3
SCALE = {0: (100.0, 50.0), 1: (1.0, 0.0)}  # very different feature scales
BN_MOMENTUM = 0.1


def model() -> nn.Module:
    return nn.Sequential(nn.BatchNorm1d(DIM), nn.Linear(DIM, 2))


def client_data(cid: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cid)
    scale, shift = SCALE[cid]
    x = (scale * rng.standard_normal((N, DIM)) + shift).astype(np.float32)
    return x, (x[:, 0] > shift).astype(np.int64)


def held_out() -> tuple[np.ndarray, np.ndarray]:
    return client_data(0)


def _task(local: tuple[str, ...]) -> Task:
    return Task(
        model=model, client_data=client_data, num_clients=2, test_data=held_out,
        local_buffers=local,
    )  # fmt: skip


def _run(
    tmp_path: Path, local: tuple[str, ...], workers: int, rounds: int = ROUNDS, sim: str = ""
) -> RunResult:
    name = f"w{workers}{sim.replace(': ', '-').replace(', ', '-')}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        "\n".join(
            [
                f"rounds: {{rounds: {rounds}, clients_per_round: 2}}",
                f"client: {{batch_size: {N}, lr: 0.01, epochs: 1}}",  # one full batch a round
                f"sim: {{workers: {workers}{sim}}}",
                f"output: {{dir: {tmp_path / 'runs'}, report: false, progress: false}}",
            ]
        )
        + "\n"
    )
    return run(load_config(path), task=_task(local), run_name=name)


def _saved(result: RunResult, cid: int) -> list[np.ndarray]:
    assert result.run_dir is not None
    state = result.run_dir / "client_state"
    return [np.load(state / f"local_buffer_{i}-{cid}.npy") for i in range(3)]


def test_local_buffers_are_per_client_whichever_worker_trains_them(tmp_path: Path) -> None:
    """Each client's saved BN statistics are what training it alone on its own data
    gives (never mixed with the other client's), identical in-process and forked."""
    inprocess = _run(tmp_path, ("0",), workers=0)
    forked = _run(tmp_path, ("0",), workers=1)
    assert forked.workers == 1
    assert inprocess.simulation.params.tobytes() == forked.simulation.params.tobytes()
    # central evaluation uses the factory's initial local buffers in both
    central = [[r.loss for r in res.simulation.rounds] for res in (inprocess, forked)]
    assert central[0] == central[1]
    fresh = TorchTrainer(_task(("0",))).evaluate(inprocess.simulation.params, held_out())
    assert central[0][-1] == fresh.loss
    decay = (1 - BN_MOMENTUM) ** ROUNDS  # one full-batch step per round
    for cid in (0, 1):
        mean, var, tracked = _saved(inprocess, cid)
        x = client_data(cid)[0].astype(np.float64)
        np.testing.assert_allclose(mean, (1 - decay) * x.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var, decay + (1 - decay) * x.var(0, ddof=1), rtol=1e-4)
        assert int(tracked) == ROUNDS
        for mine, theirs in zip(_saved(inprocess, cid), _saved(forked, cid), strict=True):
            assert mine.tobytes() == theirs.tobytes()
    assert np.all(np.abs(_saved(inprocess, 0)[0] - _saved(inprocess, 1)[0]) > 5)


@pytest.mark.parametrize("sim", [", start_method: spawn", ", backend: ray"])
def test_local_buffers_per_client_on_spawned_workers_and_ray(
    tmp_path: Path, sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawned workers and Ray actors reach the same per-client store: same bits."""
    if "ray" in sim:
        from fedstrata.sim.ray_executor import ray_available

        if not ray_available():
            pytest.skip("Ray is not installed")
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    inprocess = _run(tmp_path, ("0",), workers=0)
    other = _run(tmp_path, ("0",), workers=2, sim=sim)
    assert ("Ray" in other.executor) == ("ray" in sim)
    assert inprocess.simulation.params.tobytes() == other.simulation.params.tobytes()
    for cid in (0, 1):
        for mine, theirs in zip(_saved(inprocess, cid), _saved(other, cid), strict=True):
            assert mine.tobytes() == theirs.tobytes()


def test_without_local_buffers_bn_statistics_are_averaged(tmp_path: Path) -> None:
    """BN statistics not named in local_buffers are global: FedAvg of the clients'."""
    result = _run(tmp_path, (), workers=0, rounds=1)
    spec = TorchTrainer(_task(())).spec
    off = dict(zip(spec.names, spec.offsets, strict=True))["0.running_mean"]
    means = [client_data(c)[0].astype(np.float64).mean(0) for c in (0, 1)]
    expected = BN_MOMENTUM * (means[0] + means[1]) / 2
    got = result.simulation.params[off : off + DIM]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert result.run_dir is not None
    assert not list((result.run_dir / "client_state").glob("local_buffer_*"))


@pytest.mark.parametrize("local", [("0",), ("0.running_mean", "0.running_var")])
def test_local_buffers_stay_out_of_the_global_model(local: tuple[str, ...]) -> None:
    """Named local buffers are not in the global vector."""
    assert "0.running_mean" not in TorchTrainer(_task(local)).spec.names
