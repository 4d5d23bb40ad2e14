"""Feature sections of the configuration."""

import pytest

from fedstrata.compress import PRESETS
from fedstrata.config import load_config
from fedstrata.errors import ConfigError


@pytest.mark.parametrize("section", ["compression", "downlink", "topology.partial_compression"])
def test_a_preset_name_stands_for_a_compression_section(section):
    """Issue 11 defect 22: ``compression: topk1_int8_ef`` (docs/compression.md) was refused."""
    tree = ["topology.mode=auto"] if section.startswith("topology.") else []
    cfg = load_config(overrides=[*tree, f"{section}=topk1_int8_ef"])
    node = cfg
    for part in section.split("."):
        node = getattr(node, part)
    assert node.spec() == PRESETS["topk1_int8_ef"]
    with pytest.raises(ConfigError, match="preset 'nope' is unknown"):
        load_config(overrides=[*tree, f"{section}=nope"])
