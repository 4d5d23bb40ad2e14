"""The runtime's refusals name configuration keys that exist (issue 11 defect 22).

Issue 12 part 3: the runtime checks the same declaration as the simulator
(fedstrata.config.compat.RUNTIME); tests/config/test_compat.py covers what it refuses."""

import re

import pytest

from fedstrata.config import load_config
from fedstrata.errors import ConfigError
from fedstrata.runtime import check_supported


@pytest.mark.parametrize(
    "override",
    [
        # simulated dropouts: refused, never accepted and ignored (federated evaluation,
        # the earlier example, runs in the runtime now: test_runtime_fedeval.py)
        "devices.dropout_rate=0.2",
    ],
)
def test_refusals_name_real_keys(override):
    """Issue 11 defect 22: a refusal named ``privacy.enabled``, which is not a key."""
    with pytest.raises(ConfigError, match="not supported by the deployment runtime") as err:
        check_supported(load_config(overrides=[override]))
    named = re.findall(r"\(([a-z_]+(?:\.[a-z_]+)+), docs/", str(err.value))
    assert named == [override.split("=")[0]], str(err.value)


def test_a_plain_config_is_supported():
    check_supported(load_config())


@pytest.mark.parametrize(
    "override",
    ["devices.flops_max=1e9", "devices.compute_spread=10", "devices.availability=0.5",
     "devices.uplink_mbps=5"],
)  # fmt: skip
def test_simulated_device_settings_are_refused_with_a_reason(override):
    """The devices section generates the simulator's devices: accepted and ignored
    before; refused now, naming the setting."""
    with pytest.raises(ConfigError, match="not supported by the deployment runtime") as err:
        check_supported(load_config(overrides=[override]))
    assert override.split("=")[0] in str(err.value)


def test_link_settings_are_honoured_under_scheduling():
    """Under scheduling a client reports devices.uplink/downlink/latency as its links."""
    check_supported(load_config(overrides=["devices.uplink_mbps=5", "devices.latency_ms=3",
                                           "scheduling.selector=oort"]))  # fmt: skip
