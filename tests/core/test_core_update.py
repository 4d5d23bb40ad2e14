import numpy as np
import pytest

from fedstrata.core import ParamSpec, Update, validate_vector
from fedstrata.errors import InvalidUpdateError

SPEC = ParamSpec(("w",), ((4,),))


def test_valid_vector_passes():
    v = np.ones(4, np.float32)
    assert validate_vector(1, v, SPEC) is v


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.array([1, np.nan, 0, 0], np.float32), "1 NaN/Inf"),
        (np.array([np.inf, 0, 0, -np.inf], np.float32), "2 NaN/Inf"),
        (np.ones(5, np.float32), r"shape \(5,\)"),
        (np.ones(4, np.float64), "dtype float64"),
        ([1.0, 2.0, 3.0, 4.0], "list"),
    ],
)
def test_invalid_vectors_are_rejected_with_reason(vector, message):
    with pytest.raises(InvalidUpdateError, match=message) as info:
        validate_vector(7, vector, SPEC)
    assert info.value.client_id == 7


def test_update_rejects_negative_weight():
    with pytest.raises(InvalidUpdateError, match="weight"):
        Update(1, 0, np.zeros(4, np.float32), num_examples=3, weight=-1.0)
