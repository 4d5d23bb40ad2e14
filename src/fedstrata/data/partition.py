"""Partitions of a dataset across clients: pure functions returning index arrays.

Every function takes an explicit ``numpy.random.Generator`` and returns one sorted
or shuffled ``intp`` index array per client (a ``list`` of length ``num_clients``);
together the arrays form a partition of ``range(n)`` (no example is dropped or
repeated).

* :func:`iid` — a uniform random split into near-equal parts.
* :func:`dirichlet_label_skew` — per-class client proportions drawn from
  ``Dir(alpha)`` (Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", 2019).
* :func:`label_shards` — sort by label, cut into shards, deal shards to clients
  (McMahan et al., "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", AISTATS 2017); used by workload W1.
* :func:`quantity_skew` — log-normal client sizes with i.i.d. contents.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError, DataError

__all__ = [
    "dirichlet_label_skew",
    "groups_from_assignment",
    "iid",
    "label_shards",
    "quantity_skew",
]

IndexArray = NDArray[np.intp]


def _check_clients(num_clients: int, n: int, per_client: int = 1) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int | np.integer):
        raise ConfigError(f"num_clients must be an int, got {num_clients!r}")
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients * per_client > n:
        raise ConfigError(
            f"num_clients={num_clients} needs at least {num_clients * per_client} examples "
            f"({per_client} per client), but the dataset has {n}"
        )


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"n must be a positive int, got {n!r}")


def _check_labels(labels: NDArray[np.generic]) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] == 0:
        raise DataError(f"labels must be a non-empty 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise DataError(f"labels must have an integer dtype, got {array.dtype}")
    if array.min() < 0:
        raise DataError(f"labels must be >= 0, got minimum {array.min()}")
    return array.astype(np.int64, copy=False)


def groups_from_assignment(client_of: NDArray[np.intp], num_clients: int) -> list[IndexArray]:
    """Group example indices by their client id (order within a client: by index).

    Args:
        client_of: client id of every example, values in ``[0, num_clients)``.
        num_clients: number of groups to return (some may be empty).
    """
    order = np.argsort(client_of, kind="stable")
    counts = np.bincount(client_of, minlength=num_clients)
    return list(np.split(order, np.cumsum(counts)[:-1]))


def iid(n: int, num_clients: int, rng: np.random.Generator) -> list[IndexArray]:
    """A uniform random split of ``range(n)`` into ``num_clients`` near-equal parts.

    Raises:
        ConfigError: ``n < 1``, ``num_clients < 1`` or more clients than examples.
    """
    _check_n(n)
    _check_clients(num_clients, int(n))
    return list(np.array_split(rng.permutation(int(n)), num_clients))


def dirichlet_label_skew(
    labels: NDArray[np.generic],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[IndexArray]:
    """Label-skewed split: for each class, client shares ~ ``Dir(alpha * 1)``.

    For every class ``k`` a proportion vector ``p_k ~ Dir(alpha, ..., alpha)`` over the
    clients is drawn and the class's examples are dealt by ``Multinomial(n_k, p_k)``.
    Small ``alpha`` gives clients few classes; large ``alpha`` approaches i.i.d.
    Clients left with fewer than ``min_size`` examples are then topped up with
    examples drawn at random from clients holding more than ``min_size`` (one
    vectorised repair instead of the usual redraw-until-it-fits loop, so it always
    terminates, also for 10,000+ clients).

    Raises:
        ConfigError: ``alpha <= 0``, ``min_size < 1``, or ``num_clients * min_size``
            exceeds the number of examples.
        DataError: ``labels`` is not a non-empty 1-D array of non-negative integers.
    """
    y = _check_labels(labels)
    if not alpha > 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}")
    if min_size < 1:
        raise ConfigError(f"min_size must be >= 1, got {min_size}")
    _check_clients(num_clients, y.shape[0], min_size)
    client_of = np.empty(y.shape[0], dtype=np.intp)
    for k in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == k))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        counts = rng.multinomial(members.shape[0], shares / shares.sum())
        client_of[members] = np.repeat(np.arange(num_clients), counts)
    _top_up(client_of, num_clients, min_size, rng)
    return groups_from_assignment(client_of, num_clients)


def _top_up(
    client_of: NDArray[np.intp], num_clients: int, min_size: int, rng: np.random.Generator
) -> None:
    """Move random surplus examples to clients below ``min_size`` (in place)."""
    counts = np.bincount(client_of, minlength=num_clients)
    need = np.maximum(min_size - counts, 0)
    if not need.any():
        return
    # Rank examples within their client in a random order; rank >= min_size is surplus.
    order = np.lexsort((rng.random(size=(client_of.shape[0],)), client_of))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(order.shape[0]) - np.repeat(starts, counts)
    surplus = order[rank >= min_size]
    moved = rng.choice(surplus, size=int(need.sum()), replace=False)
    client_of[moved] = np.repeat(np.arange(num_clients), need)


def label_shards(
    labels: NDArray[np.generic],
    num_clients: int,
    shards_per_client: int,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """Pathological non-i.i.d. split by label shards (McMahan et al., 2017).

    The examples are sorted by label with a stable sort and cut into
    ``num_clients * shards_per_client`` contiguous shards (``np.array_split``); with
    ``perm = rng.permutation(num_shards)``, client ``c`` gets shards
    ``perm[s*c], ..., perm[s*c + s - 1]`` concatenated in that order. The
    permutation is the first and only draw from ``rng``.

    Raises:
        ConfigError: ``shards_per_client < 1`` or more shards than examples.
        DataError: ``labels`` is not a non-empty 1-D array of non-negative integers.
    """
    y = _check_labels(labels)
    if isinstance(shards_per_client, bool) or shards_per_client < 1:
        raise ConfigError(f"shards_per_client must be >= 1, got {shards_per_client!r}")
    _check_clients(num_clients, y.shape[0], shards_per_client)
    num_shards = num_clients * shards_per_client
    shards = np.array_split(np.argsort(y, kind="stable"), num_shards)
    perm = rng.permutation(num_shards)
    s = shards_per_client
    return [
        np.concatenate([shards[j] for j in perm[s * c : s * c + s]]) for c in range(num_clients)
    ]


def quantity_skew(
    n: int,
    num_clients: int,
    sigma: float,
    rng: np.random.Generator,
    min_size: int = 1,
) -> list[IndexArray]:
    """I.i.d. contents, log-normal sizes: size_c ∝ ``LogNormal(0, sigma)``.

    Every client first gets ``min_size`` examples; the remaining
    ``n - num_clients * min_size`` are shared in proportion to the log-normal weights
    (largest-remainder rounding, so the sizes sum to ``n`` exactly). Contents are a
    uniform random permutation of ``range(n)`` cut at those sizes.

    Raises:
        ConfigError: ``sigma < 0``, ``min_size < 1`` or too few examples.
    """
    _check_n(n)
    if not sigma >= 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    if min_size < 1:
        raise ConfigError(f"min_size must be >= 1, got {min_size}")
    _check_clients(num_clients, int(n), min_size)
    weights = rng.lognormal(0.0, sigma, num_clients)
    sizes = min_size + _largest_remainder(weights, int(n) - num_clients * min_size)
    return list(np.split(rng.permutation(int(n)), np.cumsum(sizes)[:-1]))


def _largest_remainder(weights: NDArray[np.float64], total: int) -> NDArray[np.intp]:
    """Integer shares of ``total`` proportional to ``weights``, summing to ``total``."""
    exact = weights / weights.sum() * total
    shares = np.floor(exact).astype(np.intp)
    short = total - int(shares.sum())
    shares[np.argsort(-(exact - shares), kind="stable")[:short]] += 1
    result: NDArray[np.intp] = shares
    return result
