import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.core import ParamSpec
from fedstrata.errors import ShapeError

shapes = st.lists(
    st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5
)


@given(shapes, st.integers(0, 2**31))
def test_flatten_unflatten_round_trip(shape_list, seed):
    rng = np.random.default_rng(seed)
    names = tuple(f"p{i}" for i in range(len(shape_list)))
    spec = ParamSpec(names, tuple(shape_list))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shape_list]
    flat = spec.flatten(arrays)
    assert flat.shape == (spec.size,)
    for a, b in zip(arrays, spec.unflatten(flat), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unflatten_returns_views():
    spec = ParamSpec(("w", "b"), ((2, 3), (3,)))
    flat = spec.zeros()
    w, b = spec.unflatten(flat)
    w[1, 2] = 5.0
    b[0] = 7.0
    assert flat[5] == 5.0
    assert flat[6] == 7.0
    assert spec.offsets == (0, 6)
    assert spec.nbytes == 36


def test_bad_inputs_name_the_problem():
    spec = ParamSpec(("w",), ((2, 2),))
    with pytest.raises(ShapeError, match=r"expected shape \(4,\)"):
        spec.check(np.zeros(3, np.float32))
    with pytest.raises(ShapeError, match="dtype float32"):
        spec.check(np.zeros(4, np.float64))
    with pytest.raises(ShapeError, match="'w' expected shape"):
        spec.flatten([np.zeros((4,), np.float32)])
    with pytest.raises(ShapeError, match="unique"):
        ParamSpec(("a", "a"), ((1,), (1,)))
    with pytest.raises(ShapeError, match="2 names but 1 shapes"):
        ParamSpec(("a", "b"), ((1,),))
