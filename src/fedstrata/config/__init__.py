"""Typed configuration (pydantic), presets and YAML loading."""

from fedstrata.config.loading import dump_config, list_presets, load_config, parse_override
from fedstrata.config.models import (
    CheckpointConfig,
    ClientConfig,
    CompressionConfig,
    DataConfig,
    DevicesConfig,
    DownlinkConfig,
    FailoverConfig,
    FedConfig,
    ModelConfig,
    MonitoringConfig,
    OutputConfig,
    PrivacyConfig,
    RoundsConfig,
    ServerConfig,
    SimConfig,
)

__all__ = [
    "CheckpointConfig",
    "ClientConfig",
    "CompressionConfig",
    "DataConfig",
    "DevicesConfig",
    "DownlinkConfig",
    "FailoverConfig",
    "FedConfig",
    "ModelConfig",
    "MonitoringConfig",
    "OutputConfig",
    "PrivacyConfig",
    "RoundsConfig",
    "ServerConfig",
    "SimConfig",
    "dump_config",
    "list_presets",
    "load_config",
    "parse_override",
]
