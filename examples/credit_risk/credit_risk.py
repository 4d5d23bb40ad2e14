"""Credit risk from per-branch CSV tables: a fedstrata task (Issue 14 part 5).

Every branch of a bank keeps its own customer table, ``data/branch_<k>.csv``
(numeric and categorical columns; defaults are rare, 8 to 20% by branch). The task
reads a branch's table, encodes it with feature constants the branches agreed on
(no raw statistics leave a branch), weights the rare class in the loss, and reports
AUC (the headline), average precision, F1, accuracy and loss on a central hold-out
table. The tables are synthetic: the first run writes them (``python credit_risk.py``
does too); put your own tables with the same columns in ``data/`` to use them.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from torch import nn

from fedstrata.torch_adapter import Task

DATA = Path(__file__).resolve().parent / "data"
NUM_BRANCHES = 12
EMPLOYMENT = ("salaried", "self_employed", "retired", "unemployed")
NUMERIC = ("age", "income", "debt_ratio", "late_payments", "credit_lines", "tenure_years")
# agreed scaling of the numeric columns (mean, scale); income is log-scaled first
SCALING = {
    "age": (45.0, 12.0), "income": (10.6, 0.5), "debt_ratio": (0.3, 0.2),
    "late_payments": (0.8, 1.0), "credit_lines": (4.0, 2.0), "tenure_years": (5.0, 5.0),
}  # fmt: skip
DEFAULT_WEIGHT = 6.0  # the loss weight of a default: about (1 - rate) / rate
Table = tuple[NDArray[np.float32], NDArray[np.int64]]


# ---- the synthetic tables (your bank has its own) ---------------------------------
def _customers(rng: np.random.Generator, n: int, risk: float) -> list[dict[str, object]]:
    age = rng.normal(45, 12, n).clip(18, 90).round()
    income = rng.lognormal(10.6, 0.5, n).round(-2)
    debt = rng.beta(2, 5, n).round(3)
    late = rng.poisson(0.8, n)
    lines = rng.poisson(4, n)
    tenure = rng.exponential(5, n).round(1)
    job = rng.choice(len(EMPLOYMENT), n, p=[0.6, 0.2, 0.12, 0.08])
    z = risk + 3.5 * debt + 0.7 * late - 0.8 * (np.log(income) - 10.6) - 0.02 * (age - 45)
    z += np.array([0.0, 0.4, -0.3, 1.2])[job] - 0.08 * tenure
    default = rng.random(n) < 1 / (1 + np.exp(-z))
    return [
        {"age": a, "income": i, "debt_ratio": d, "late_payments": lp, "credit_lines": cl,
         "tenure_years": t, "employment": EMPLOYMENT[j], "default": int(y)}
        for a, i, d, lp, cl, t, j, y in zip(age, income, debt, late, lines, tenure, job, default,
                                              strict=True)
    ]  # fmt: skip


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*NUMERIC, "employment", "default"])
        writer.writeheader()
        writer.writerows(rows)


def prepare_data(seed: int = 0) -> None:
    """Write the branches' tables (sizes 60 to 600, default rates 8 to 20%) and a
    central hold-out table."""
    rng = np.random.default_rng(seed)
    DATA.mkdir(exist_ok=True)
    for branch in range(NUM_BRANCHES):
        size, risk = int(rng.integers(60, 600)), rng.uniform(-4.4, -3.0)
        _write_csv(DATA / f"branch_{branch}.csv", _customers(rng, size, risk))
    _write_csv(DATA / "holdout.csv", _customers(rng, 2000, -3.7))


# ---- the task -----------------------------------------------------------------------
@cache
def read_table(path: Path) -> Table:
    """One table, encoded: scaled numeric columns, one-hot employment; labels."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    numeric = np.array([[float(r[c]) for c in NUMERIC] for r in rows], dtype=np.float64)
    numeric[:, 1] = np.log(numeric[:, 1])
    means, scales = np.array([SCALING[c] for c in NUMERIC]).T
    job = np.array([EMPLOYMENT.index(r["employment"]) for r in rows])
    x = np.hstack([(numeric - means) / scales, np.eye(len(EMPLOYMENT))[job]])
    return x.astype(np.float32), np.array([int(r["default"]) for r in rows], dtype=np.int64)


def branch_data(branch: int) -> Table:
    return read_table(DATA / f"branch_{branch}.csv")


def holdout() -> Table:
    return read_table(DATA / "holdout.csv")


def model() -> nn.Module:
    features = len(NUMERIC) + len(EMPLOYMENT)
    return nn.Sequential(
        nn.Linear(features, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 16), nn.ReLU(),
        nn.Linear(16, 2),
    )  # fmt: skip


def weighted_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with defaults weighted up: the rare class is the one that matters."""
    weight = torch.tensor([1.0, DEFAULT_WEIGHT])
    return nn.functional.cross_entropy(logits, target, weight=weight)


def evaluate(net: nn.Module, data: Table) -> dict[str, float]:
    """AUC (headline), average precision, F1 of the default class, accuracy, loss."""
    x, y = data
    logits = net(torch.from_numpy(x))
    score = logits.softmax(dim=1)[:, 1].numpy()
    pred = (score > 0.5).astype(np.int64)
    return {
        "auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "accuracy": float((pred == y).mean()),
        "loss": float(weighted_loss(logits, torch.from_numpy(y)).item()),
    }


def make_task() -> Task:
    """The task the config names (``credit_risk:make_task``); writes the tables first
    if ``data/`` has none."""
    if not (DATA / "holdout.csv").is_file():
        prepare_data()
    return Task(
        model=model,
        client_data=branch_data,
        num_clients=NUM_BRANCHES,
        test_data=holdout,
        loss=weighted_loss,
        evaluate=evaluate,
        name="credit-risk",
    )


if __name__ == "__main__":
    prepare_data()
    print(f"wrote {NUM_BRANCHES} branch tables and holdout.csv to {DATA}")
