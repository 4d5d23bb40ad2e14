"""The ``monitoring`` configuration section (a part of :class:`fedstrata.config.FedConfig`).

Defined here, next to what it configures, and placed in the configuration tree by
:mod:`fedstrata.config.models` (the configuration layer sits above monitoring).
Every setting is honoured by the simulator (``fedstrata run``) and the runtime's center.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedstrata.monitoring.alerts import DEFAULT_RULES, AlertRule

__all__ = ["MonitoringConfig"]


class MonitoringConfig(BaseModel):
    """Live monitoring: alert rules, the Prometheus exporter, TensorBoard and MLflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alerts: tuple[AlertRule, ...] = Field(
        DEFAULT_RULES,
        description="alert rules checked after every round (logged once per firing and "
        "stored in the run directory); [] turns alerts off. Default: sync share > 0.7, "
        "device utilization < 0.6, completion < 0.95, epsilon ahead of plan, accuracy "
        "falling for 3 rounds",
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve Prometheus metrics on this port (0: a free port, logged); "
        "null: no exporter",
    )  # fmt: skip
    metrics_address: str = Field("127.0.0.1", description="address the exporter listens on")
    tensorboard_dir: Path | None = Field(
        None, description="write TensorBoard event files here (extra: fedstrata[tensorboard])"
    )
    mlflow_uri: str | None = Field(
        None,
        description="log each round to this MLflow tracking URI, e.g. sqlite:///mlflow.db "
        "or a server URL (extra: fedstrata[mlflow])",
    )

    @field_validator("alerts")
    @classmethod
    def _unique_names(cls, rules: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
        names = [r.name for r in rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"alert rule names must be unique; repeated: {repeated}")
        return rules
