"""Built-in datasets: scikit-learn digits and FedProx's Synthetic(alpha, beta).

* :func:`load_digits_split` — the 8x8 digits of scikit-learn (1,797 images, 10
  classes), the data of benchmark workload W1.
* :func:`synthetic` — Synthetic(alpha, beta) of Li et al., "Federated Optimization in
  Heterogeneous Networks" (FedProx), MLSys 2020, Sec. 5.1: each client has its own
  softmax-regression model and its own feature distribution; ``alpha`` controls how
  much the models differ between clients and ``beta`` how much the features do.
* :func:`make_federated` — one call from a dataset name and partition to a
  :class:`~fedstrata.data.federated.FederatedDataset`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.training import ArrayDataset
from fedstrata.data import partition as part
from fedstrata.data.federated import FederatedDataset, holdout_split
from fedstrata.data.folder import load_npz_folder
from fedstrata.errors import ConfigError, MissingDependencyError

__all__ = ["DatasetName", "PartitionName", "load_digits_split", "make_federated", "synthetic"]

logger = logging.getLogger(__name__)

DatasetName = Literal["digits", "synthetic", "npz"]
PartitionName = Literal["iid", "dirichlet", "shards", "quantity"]

DIGITS_CLASSES = 10


def load_digits_split(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn digits, features / 16 as float32, a stratified train/test split.

    Exactly ``train_test_split(x, y, test_size=test_fraction, stratify=y,
    random_state=seed)``; the defaults reproduce workload W1 (1,437 train and 360
    test examples).

    Raises:
        ConfigError: ``test_fraction`` outside ``(0, 1)``.
        MissingDependencyError: scikit-learn is not installed.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    # Imported here: scikit-learn costs ~0.7 s to import and only this loader needs it.
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # a base dependency, missing only from a partial install
        raise MissingDependencyError("sklearn", "scikit-learn", "the digits dataset") from exc

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    return ArrayDataset(x=x_tr, y=y_tr), ArrayDataset(x=x_te, y=y_te)


def _synthetic_sizes(
    num_clients: int,
    rng: np.random.Generator,
    *,
    size_log_mean: float,
    size_log_sigma: float,
    min_samples: int,
    max_samples: int | None,
) -> NDArray[np.intp]:
    sizes = rng.lognormal(size_log_mean, size_log_sigma, num_clients).astype(np.intp)
    sizes += min_samples
    if max_samples is not None:
        sizes = np.minimum(sizes, max_samples)
    return sizes


def _check_synthetic(
    alpha: float, beta: float, num_clients: int, dim: int, num_classes: int
) -> None:
    if not alpha >= 0:
        raise ConfigError(f"synthetic: alpha must be >= 0, got {alpha}")
    if not beta >= 0:
        raise ConfigError(f"synthetic: beta must be >= 0, got {beta}")
    if num_clients < 1:
        raise ConfigError(f"synthetic: num_clients must be >= 1, got {num_clients}")
    if dim < 1:
        raise ConfigError(f"synthetic: dim must be >= 1, got {dim}")
    if num_classes < 2:
        raise ConfigError(f"synthetic: num_classes must be >= 2, got {num_classes}")


def _synthetic_arrays(
    sizes: NDArray[np.intp],
    rng: np.random.Generator,
    *,
    alpha: float,
    beta: float,
    dim: int,
    num_classes: int,
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.intp]]:
    """Features, labels and client offsets of Synthetic(alpha, beta) (see :func:`synthetic`)."""
    num_clients = int(sizes.shape[0])
    u = rng.normal(0.0, alpha, size=(num_clients,))
    big_b = rng.normal(0.0, beta, size=(num_clients,))
    w = rng.normal(u[:, None, None], 1.0, (num_clients, dim, num_classes))
    b = rng.normal(u[:, None], 1.0, (num_clients, num_classes))
    v = rng.normal(big_b[:, None], 1.0, (num_clients, dim))
    std = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
    owner = np.repeat(np.arange(num_clients), sizes)
    x = v[owner] + rng.standard_normal((owner.shape[0], dim)) * std
    y = np.empty(owner.shape[0], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.intp)
    for k in range(num_clients):
        rows = slice(offsets[k], offsets[k + 1])
        y[rows] = np.argmax(x[rows] @ w[k] + b[k], axis=1)
    return x.astype(np.float32), y, offsets


def synthetic(
    alpha: float,
    beta: float,
    num_clients: int,
    rng: np.random.Generator,
    *,
    dim: int = 60,
    num_classes: int = 10,
    test_fraction: float = 0.2,
    size_log_mean: float = 4.0,
    size_log_sigma: float = 2.0,
    min_samples: int = 50,
    max_samples: int | None = None,
) -> FederatedDataset:
    """FedProx's Synthetic(alpha, beta) (Li et al., MLSys 2020, Sec. 5.1).

    For client ``k``: ``u_k ~ N(0, alpha)``, ``W_k ~ N(u_k, 1)`` (``dim x classes``),
    ``b_k ~ N(u_k, 1)``; ``B_k ~ N(0, beta)``, ``v_k ~ N(B_k, 1)`` (``dim``);
    ``x ~ N(v_k, Sigma)`` with diagonal ``Sigma_jj = j^-1.2``;
    ``y = argmax(softmax(x W_k + b_k))`` (= ``argmax(x W_k + b_k)``). As in the
    authors' generator the second argument of ``N`` is a standard deviation and
    client sizes are ``floor(LogNormal(size_log_mean, size_log_sigma)) +
    min_samples`` (optionally capped at ``max_samples``: the log-normal tail is
    heavy). A ``test_fraction`` of each client's examples is held out (see
    :func:`~fedstrata.data.federated.holdout_split`) and the held-out examples of
    all clients form the test set.

    Raises:
        ConfigError: a parameter out of range.
    """
    _check_synthetic(alpha, beta, num_clients, dim, num_classes)
    sizes = _synthetic_sizes(
        num_clients,
        rng,
        size_log_mean=size_log_mean,
        size_log_sigma=size_log_sigma,
        min_samples=min_samples,
        max_samples=max_samples,
    )
    x, y, offsets = _synthetic_arrays(
        sizes, rng, alpha=alpha, beta=beta, dim=dim, num_classes=num_classes
    )
    base = ArrayDataset(x=x, y=y)
    tr_idx, tr_off, te_idx, _ = holdout_split(
        np.arange(y.shape[0], dtype=np.intp), offsets, test_fraction, rng
    )
    name = f"synthetic({alpha:g},{beta:g})"
    return FederatedDataset(base, tr_idx, tr_off, base.subset(te_idx), num_classes, (dim,), name)


def partition_labels(
    labels: NDArray[np.int64],
    partition: PartitionName,
    num_clients: int,
    rng: np.random.Generator,
    *,
    shards_per_client: int = 2,
    dirichlet_alpha: float = 0.5,
    quantity_sigma: float = 1.0,
) -> list[NDArray[np.intp]]:
    """Apply the named partition function to a label vector.

    Raises:
        ConfigError: unknown partition or invalid parameters.
    """
    n = int(labels.shape[0])
    if partition == "iid":
        return part.iid(n, num_clients, rng)
    if partition == "dirichlet":
        return part.dirichlet_label_skew(labels, num_clients, dirichlet_alpha, rng)
    if partition == "shards":
        return part.label_shards(labels, num_clients, shards_per_client, rng)
    if partition == "quantity":
        return part.quantity_skew(n, num_clients, quantity_sigma, rng)
    raise ConfigError(
        f"partition must be one of iid, dirichlet, shards, quantity; got {partition!r}"
    )


def make_federated(
    name: DatasetName,
    partition: PartitionName,
    num_clients: int,
    seed: int,
    *,
    shards_per_client: int = 2,
    dirichlet_alpha: float = 0.5,
    quantity_sigma: float = 1.0,
    synthetic_alpha: float = 1.0,
    synthetic_beta: float = 1.0,
    synthetic_max_samples: int | None = None,
    test_fraction: float = 0.2,
    path: Path | None = None,
) -> FederatedDataset:
    """Build a federated dataset by name (the fields of the ``data`` config section).

    * ``"digits"``: :func:`load_digits_split` (fixed split, ``random_state=0``), then
      ``partition`` with ``np.random.default_rng(seed)`` as the only generator.
      ``("digits", "shards", 100, 0)`` reproduces workload W1 exactly.
    * ``"synthetic"``: :func:`synthetic` with ``default_rng(seed)``; the data comes
      partitioned, so ``partition`` is ignored.
    * ``"npz"``: :func:`~fedstrata.data.folder.load_npz_folder` on ``path``; the
      folder defines the clients, so ``partition`` and ``num_clients`` are ignored.

    Raises:
        ConfigError: unknown name or partition, invalid parameters, missing path.
        DataError: unreadable or inconsistent data (``npz``).
    """
    rng = np.random.default_rng(seed)
    if name == "digits":
        train, test = load_digits_split(test_fraction)
        parts = partition_labels(
            train.y,
            partition,
            num_clients,
            rng,
            shards_per_client=shards_per_client,
            dirichlet_alpha=dirichlet_alpha,
            quantity_sigma=quantity_sigma,
        )
        return FederatedDataset.from_partition(train, parts, test, DIGITS_CLASSES, "digits")
    if name == "synthetic":
        logger.debug("synthetic data comes partitioned; ignoring partition=%s", partition)
        return synthetic(
            synthetic_alpha,
            synthetic_beta,
            num_clients,
            rng,
            test_fraction=test_fraction,
            max_samples=synthetic_max_samples,
        )
    if name == "npz":
        if path is None:
            raise ConfigError("make_federated: path is required when name is 'npz'")
        return load_npz_folder(path, test_fraction=test_fraction, seed=seed)
    raise ConfigError(f"make_federated: name must be digits, synthetic or npz; got {name!r}")
