"""The runtime's refusals name configuration keys that exist (issue 11 defect 22)."""

import re

import pytest

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported


@pytest.mark.parametrize(
    "override",
    [
        "downlink.preset=int8",
        "privacy.mechanism=central",
        "secagg.enabled=true",
        "evaluation.every=2",  # federated evaluation: refused, never accepted and ignored
    ],
)
def test_refusals_name_real_keys(override):
    """Issue 11 defect 22: a refusal named ``privacy.enabled``, which is not a key."""
    with pytest.raises(ConfigError, match="not supported by the runtime") as err:
        check_supported(load_config(overrides=[override]))
    named = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)=([\w.]+)", str(err.value))
    assert named, str(err.value)
    for key, value in named:
        load_config(overrides=[f"{key}={value}"])  # raises ConfigError for an unknown key


def test_a_plain_config_is_supported():
    check_supported(load_config())
