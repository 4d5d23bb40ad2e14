"""FederatedDataset: client gathering, CSR layout, validation, per-client hold-out."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstrata.core.training import ArrayDataset
from fedstrata.data import FederatedDataset, client_test_split, iid
from fedstrata.errors import ConfigError, DataError


def make_arrays(n: int, dim: int = 3, classes: int = 4, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset(
        x=rng.standard_normal((n, dim)).astype(np.float32),
        y=rng.integers(0, classes, n).astype(np.int64),
    )


def make_fd(n: int = 50, clients: int = 5, seed: int = 0) -> FederatedDataset:
    train, test = make_arrays(n, seed=seed), make_arrays(10, seed=seed + 1)
    parts = iid(n, clients, np.random.default_rng(seed))
    return FederatedDataset.from_partition(train, parts, test, 4, "toy")


def test_client_gathers_its_rows() -> None:
    train, test = make_arrays(30), make_arrays(5, seed=1)
    parts = [np.array([3, 1]), np.array([0, 2, 29]), np.arange(4, 29)]
    fd = FederatedDataset.from_partition(train, parts, test, 4, "toy")
    assert fd.num_clients == 3
    np.testing.assert_array_equal(fd.client_sizes(), [2, 3, 25])
    for i, p in enumerate(parts):
        c = fd.client(i)
        np.testing.assert_array_equal(c.x, train.x[p])
        np.testing.assert_array_equal(c.y, train.y[p])
        assert c.x.dtype == np.float32
        assert c.y.dtype == np.int64
    assert fd.input_shape == (3,)


def test_client_indices_is_a_read_only_view() -> None:
    fd = make_fd()
    view = fd.client_indices(1)
    assert np.shares_memory(view, fd.index)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 0


@pytest.mark.parametrize("bad", [-1, 5, 100, 1.0, True, "0"])
def test_out_of_range_client_id_raises(bad: object) -> None:
    fd = make_fd()
    with pytest.raises(DataError, match="client id"):
        fd.client(bad)  # type: ignore[arg-type]


def test_numpy_integer_ids_are_accepted() -> None:
    fd = make_fd()
    np.testing.assert_array_equal(fd.client(np.int64(2)).y, fd.client(2).y)


def test_ten_thousand_clients_stay_o_of_data() -> None:
    n, clients = 20_000, 10_000
    fd = make_fd(n, clients)
    assert fd.num_clients == clients
    assert fd.index.nbytes == n * fd.index.itemsize
    assert fd.offsets.shape == (clients + 1,)
    # Pickled size (what worker processes receive) is dominated by the data itself.
    data_bytes = fd.train.x.nbytes + fd.train.y.nbytes + fd.test.x.nbytes + fd.test.y.nbytes
    index_bytes = fd.index.nbytes + fd.offsets.nbytes
    assert len(pickle.dumps(fd)) < 1.05 * (data_bytes + index_bytes) + 10_000
    np.testing.assert_array_equal(fd.client(9_999).y, fd.train.y[fd.client_indices(9_999)])


def test_pickle_round_trip() -> None:
    fd = make_fd()
    back = pickle.loads(pickle.dumps(fd))
    np.testing.assert_array_equal(back.client(3).x, fd.client(3).x)
    assert back.name == "toy"
    assert back.num_classes == 4


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"offsets": np.array([0, 10, 5, 50])}, "non-decreasing"),
        ({"offsets": np.array([1, 50])}, "start at 0"),
        ({"offsets": np.array([0, 49])}, "end at"),
        ({"offsets": np.array([0])}, "offsets"),
        ({"index": np.full(50, 50)}, "outside"),
        ({"index": np.zeros(50)}, "integer"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2}, "labels must lie"),
        ({"input_shape": (4,)}, "input_shape"),
        ({"test": ArrayDataset(np.zeros((2, 5), np.float32), np.zeros(2, np.int64))}, "test"),
    ],
)
def test_inconsistent_layout_raises(change: dict[str, object], needle: str) -> None:
    fd = make_fd()
    fields = {
        "train": fd.train,
        "index": fd.index,
        "offsets": fd.offsets,
        "test": fd.test,
        "num_classes": fd.num_classes,
        "input_shape": fd.input_shape,
        "name": fd.name,
    }
    fields.update(change)
    with pytest.raises(DataError, match=needle):
        FederatedDataset(**fields)  # type: ignore[arg-type]


def test_from_partition_needs_clients() -> None:
    with pytest.raises(DataError, match="no clients"):
        FederatedDataset.from_partition(make_arrays(4), [], make_arrays(2), 4, "x")


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=20),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**32 - 1),
)
def test_client_test_split_partitions_each_client(
    sizes: list[int], fraction: float, seed: int
) -> None:
    n = sum(sizes)
    if n == 0:
        sizes[0], n = 1, 1
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    parts = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes))]
    fd = FederatedDataset.from_partition(make_arrays(n), parts, make_arrays(3), 4, "t")
    train, held = client_test_split(fd, fraction, np.random.default_rng(seed))
    assert train.num_clients == held.num_clients == fd.num_clients
    assert train.train is fd.train
    assert held.train is fd.train
    for i, size in enumerate(sizes):
        a, b = train.client_indices(i), held.client_indices(i)
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), parts[i])
        assert len(b) == min(int(np.floor(fraction * size)), max(size - 1, 0))
        assert size == 0 or len(a) >= 1
        assert np.all(np.diff(a) > 0)
        assert np.all(np.diff(b) > 0)


def test_client_test_split_validates_fraction() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        client_test_split(make_fd(), 1.0, np.random.default_rng(0))
