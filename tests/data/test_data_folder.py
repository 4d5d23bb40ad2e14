"""load_npz_folder: users' own client files, and every way they can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedstrata.data import load_npz_folder
from fedstrata.errors import DataError


def write_clients(folder: Path, sizes: list[int], dim: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i, n in enumerate(sizes):
        x = rng.random((n, dim))
        np.savez(folder / f"client_{i}.npz", x=x, y=np.full(n, i % 3))


def test_loads_clients_in_numeric_order_with_test_file(tmp_path: Path) -> None:
    write_clients(tmp_path, [3] * 12)
    np.savez(tmp_path / "test.npz", x=np.ones((4, 4)), y=np.array([0, 1, 2, 5]))
    fd = load_npz_folder(tmp_path)
    assert fd.num_clients == 12
    assert fd.num_classes == 6
    assert fd.input_shape == (4,)
    expected = np.load(tmp_path / "client_10.npz")
    np.testing.assert_array_equal(fd.client(10).x, expected["x"].astype(np.float32))
    assert fd.client(10).y.tolist() == [1, 1, 1]
    assert fd.client(2).y.tolist() == [2, 2, 2]
    assert len(fd.test) == 4
    assert fd.test.x.dtype == np.float32
    assert fd.name == tmp_path.name


def test_without_test_file_holds_out_a_fraction_per_client(tmp_path: Path) -> None:
    write_clients(tmp_path, [10, 5, 1])
    fd = load_npz_folder(tmp_path, test_fraction=0.2, seed=1)
    np.testing.assert_array_equal(fd.client_sizes(), [8, 4, 1])
    assert len(fd.test) == 3
    again = load_npz_folder(tmp_path, test_fraction=0.2, seed=1)
    np.testing.assert_array_equal(again.test.x, fd.test.x)


def test_multidimensional_examples_and_float_integral_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "client_a.npz", x=np.zeros((2, 8, 8)), y=np.array([1.0, 2.0]))
    np.savez(tmp_path / "client_0.npz", x=np.ones((2, 8, 8), np.uint8), y=np.array([0, 0]))
    fd = load_npz_folder(tmp_path, test_fraction=0.0)
    assert fd.input_shape == (8, 8)
    assert fd.client(0).y.tolist() == [0, 0]  # numeric suffixes first
    assert fd.client(1).y.tolist() == [1, 2]


def _bad(folder: Path, name: str, **arrays: np.ndarray) -> None:
    np.savez(folder / name, **arrays)


GOOD_X = np.zeros((3, 4))
GOOD_Y = np.array([0, 1, 2])


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": GOOD_X}, r"missing array\(s\) \['y'\]"),
        ({"y": GOOD_Y}, r"missing array\(s\) \['x'\]"),
        ({"x": GOOD_X, "y": np.array([0, 1])}, "3 examples but y has 2"),
        ({"x": GOOD_X, "y": np.array([0.0, 0.5, 1.0])}, "non-integer labels"),
        ({"x": GOOD_X, "y": np.array(["a", "b", "c"])}, "integer labels"),
        ({"x": GOOD_X, "y": np.array([0, -1, 2])}, ">= 0"),
        ({"x": GOOD_X, "y": GOOD_Y.reshape(3, 1)}, "1-D"),
        ({"x": np.array([[0.0, np.nan, 0, 0]] * 3), "y": GOOD_Y}, "NaN or Inf"),
        ({"x": np.full((3, 4), np.inf), "y": GOOD_Y}, "NaN or Inf"),
        ({"x": np.zeros(3), "y": GOOD_Y}, "shape"),
        ({"x": np.array([["a"] * 4] * 3), "y": GOOD_Y}, "numeric"),
        ({"x": np.zeros((0, 4)), "y": np.zeros(0, int)}, "no examples"),
        ({"x": np.zeros((3, 5)), "y": GOOD_Y}, r"shape \(5,\).*earlier files have \(4,\)"),
    ],
)
def test_invalid_client_file_is_named(
    tmp_path: Path, arrays: dict[str, np.ndarray], needle: str
) -> None:
    _bad(tmp_path, "client_0.npz", x=GOOD_X, y=GOOD_Y)
    _bad(tmp_path, "client_1.npz", **arrays)
    with pytest.raises(DataError, match=rf"client_1\.npz: .*{needle}"):
        load_npz_folder(tmp_path)


def test_invalid_test_file_is_named(tmp_path: Path) -> None:
    _bad(tmp_path, "client_0.npz", x=GOOD_X, y=GOOD_Y)
    _bad(tmp_path, "test.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"test\.npz: examples have shape \(3,\)"):
        load_npz_folder(tmp_path)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "client_0.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"client_0\.npz: not a readable \.npz"):
        load_npz_folder(tmp_path)


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    obj = np.array([{"a": 1}, None, 3], dtype=object)
    np.savez(tmp_path / "client_0.npz", x=GOOD_X, y=obj)
    with pytest.raises(DataError, match=r"client_0\.npz"):
        load_npz_folder(tmp_path)


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "other.npz").write_bytes(b"")
    with pytest.raises(DataError, match="holds no client_"):
        load_npz_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_npz_folder(tmp_path / "nope")
