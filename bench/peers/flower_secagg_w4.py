"""Flower 1.42 on workload W4 (``../shared/BASELINES.md``): rounds with and without
SecAgg+ in one simulation. Run by a Python that has Flower (``flwr[simulation]==1.42.*``,
torch, scikit-learn), never by fedstrata's: ``bench/secagg_flower.py --flower-python
PATH`` starts it.

W1's data, model and training as BASELINES.md describes them (digits / 16, stratified
80/20 split, label-sorted train set cut into ``2 * clients`` shards: W1's 200 for 100
clients; client ``c`` gets shards ``perm[2c]`` and ``perm[2c+1]``; MLP 64-128-10 after
``torch.manual_seed(0)``; 1 local epoch of SGD, batch 8, lr 0.05, shuffling seeded
``100003 * round + client``; FedAvg weighted by examples; every client every round;
centralized evaluation after each round). Flower's simulation runtime (Ray backend, 2
actors of 1 CPU each, one torch thread per process).

One simulation runs every round; each round is either a plain one (Flower's
``default_fit_workflow``) or a SecAgg+ one (``SecAggPlusWorkflow(num_shares,
reconstruction_threshold)`` on the server, ``secaggplus_mod`` on the clients; W4: 11
shares, threshold 6, no dropouts). Round 1 is plain and warms the Ray actors up; then
pairs of rounds alternate in the order plain, secagg, secagg, plain, plain, secagg ...
so drift on a shared machine hits both kinds alike. A round's time is the interval
between two centralized evaluations (the evaluation closes each round).

Prints, as its last line, one JSON object: ``{"flower_version", "clients", "shares",
"threshold", "rounds": [{"mode", "s", "accuracy", "changed"}, ...], "wall_s"}``
(``changed``: the round moved the model; a SecAgg+ round that halted does not).

Usage: python flower_secagg_w4.py [--clients 100] [--pairs 3] [--shares 11] [--threshold 6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import flwr
import numpy as np
import torch
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, MessageType, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.server.workflow.default_workflows import (
    default_centralized_evaluation_workflow,
    default_fit_workflow,
    default_init_params_workflow,
)
from flwr.simulation import run_simulation
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

torch.set_num_threads(1)

Arrays = list[np.ndarray]
Split = tuple[np.ndarray, np.ndarray]


def w1_data(num_clients: int) -> tuple[list[Split], Split]:
    """W1's partition for ``num_clients`` clients (2 shards each) and its test split."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    order = np.argsort(ytr, kind="stable")
    shards = 2 * num_clients
    xs, ys = np.array_split(xtr[order], shards), np.array_split(ytr[order], shards)
    perm = np.random.default_rng(0).permutation(shards)
    clients = []
    for c in range(num_clients):
        a, b = perm[2 * c], perm[2 * c + 1]
        clients.append((np.concatenate([xs[a], xs[b]]), np.concatenate([ys[a], ys[b]])))
    return clients, (xte, yte.astype(np.int64))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def get_weights(net: nn.Module) -> Arrays:
    return [p.detach().cpu().numpy().copy() for p in net.state_dict().values()]


def set_weights(net: nn.Module, weights: Arrays) -> None:
    keys = list(net.state_dict().keys())
    state = {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    net.load_state_dict(state)


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, seed: int) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    order = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    loss_fn = nn.CrossEntropyLoss()
    for i in range(0, len(xt), 8):
        idx = order[i : i + 8]
        opt.zero_grad()
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()


class W1Client(NumPyClient):
    def __init__(self, cid: int, data: tuple[np.ndarray, np.ndarray]) -> None:
        self.cid, (self.x, self.y) = cid, data
        self.net = model()

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        set_weights(self.net, parameters)
        train(self.net, self.x, self.y, 100003 * int(config["round"]) + self.cid)
        return get_weights(self.net), len(self.x), {}


def secagg_when_asked(msg, ctxt, call_next):  # type: ignore[no-untyped-def]
    """``secaggplus_mod`` for the SecAgg+ rounds' messages, plain fit for the others."""
    asked = RECORD_KEY_CONFIGS in msg.content.config_records
    if msg.metadata.message_type == MessageType.TRAIN and asked:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def schedule(pairs: int) -> list[str]:
    """Round 1 plain (warm-up), then ``pairs`` of each kind in ABBA order."""
    out = ["warmup"]
    for i in range(pairs):
        out += ["plain", "secagg"] if i % 2 == 0 else ["secagg", "plain"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--shares", type=int, default=11)
    parser.add_argument("--threshold", type=int, default=6)
    args = parser.parse_args()
    t0 = time.perf_counter()
    clients, (xte, yte) = w1_data(args.clients)
    modes = schedule(args.pairs)
    marks: list[float] = []
    evals: list[tuple[float, str]] = []

    def evaluate(server_round, parameters, config):  # type: ignore[no-untyped-def]
        net = model()
        set_weights(net, parameters)
        with torch.no_grad():
            logits = net(torch.from_numpy(xte))
            loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(yte)))
            acc = float((logits.argmax(1).numpy() == yte).mean())
        digest = hashlib.sha256(b"".join(np.asarray(p).tobytes() for p in parameters))
        marks.append(time.perf_counter())
        evals.append((acc, digest.hexdigest()))
        return loss, {"accuracy": acc}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        cid = int(context.node_config["partition-id"])
        return W1Client(cid, clients[cid]).to_client()

    secagg = SecAggPlusWorkflow(num_shares=args.shares, reconstruction_threshold=args.threshold)
    server_app = ServerApp()

    @server_app.main()
    def _server(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=args.clients,
            min_available_clients=args.clients, evaluate_fn=evaluate,
            on_fit_config_fn=lambda r: {"round": r},
            initial_parameters=ndarrays_to_parameters(get_weights(model())),
        )  # fmt: skip
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=len(modes)), strategy=strategy
        )
        _rounds(grid, legacy, [secagg if m == "secagg" else default_fit_workflow for m in modes])

    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False},
    }
    client_app = ClientApp(client_fn=client_fn, mods=[secagg_when_asked])
    run_simulation(server_app, client_app, args.clients, backend_config=backend)
    rounds = []
    for i, mode in enumerate(modes):
        acc, digest = evals[i + 1]
        rounds.append({
            "mode": mode, "s": marks[i + 1] - marks[i], "accuracy": acc,
            "changed": digest != evals[i][1],
        })  # fmt: skip
    print(json.dumps({
        "flower_version": flwr.__version__, "clients": args.clients, "shares": args.shares,
        "threshold": args.threshold, "rounds": rounds, "wall_s": time.perf_counter() - t0,
    }))  # fmt: skip


def _rounds(grid: Grid, context: LegacyContext, fits: list) -> None:  # type: ignore[type-arg]
    """Flower's ``DefaultWorkflow`` loop with each round's own fit workflow (no federated
    evaluation: W1 evaluates centrally)."""
    thread, stop, ready = start_update_client_manager_thread(grid, context.client_manager)
    ready.wait()
    default_init_params_workflow(grid, context)  # evaluates the initial model: mark 0
    cfg = context.state.config_records.get(MAIN_CONFIGS_RECORD)
    if cfg is None:
        from flwr.common import ConfigRecord

        cfg = ConfigRecord()
        context.state.config_records[MAIN_CONFIGS_RECORD] = cfg
    cfg[Key.START_TIME] = time.perf_counter()
    for current_round, fit in enumerate(fits, start=1):
        cfg[Key.CURRENT_ROUND] = current_round
        fit(grid, context)
        default_centralized_evaluation_workflow(grid, context)
    stop.set()
    thread.join()


if __name__ == "__main__":
    main()
