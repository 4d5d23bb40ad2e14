"""Standby centers of the deployment runtime: the lease and its timing (issue 15 part 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from fedstrata.config.base import Strict as _Strict
from fedstrata.config.checkpoint import CheckpointConfig

if TYPE_CHECKING:
    from fedstrata.config.models import FedConfig

__all__ = ["SIMULATION_REFUSAL", "FailoverConfig", "runtime_refusal"]


class FailoverConfig(_Strict):
    """Active and standby centers (docs/resilience-failover.md).

    With ``enabled``, every ``fedstrata serve center`` of the federation is a center
    node: it follows the lease in ``lease_url`` until it holds it, then resumes from the
    newest checkpoint in the shared object tier (``checkpoint.object_url``, written
    every round) and serves the rest of the run. Start the same command on every
    center host (each with its own ``--node`` name and address); the first to take the
    lease is active, the others are standbys. The runtime only: a simulation has no
    center process to lose.
    """

    enabled: bool = Field(
        False,
        description="run `serve center` as a center node with standbys (needs "
        "checkpoint.enabled, checkpoint.object_url and checkpoint.object_every=1)",
    )
    lease_url: str | None = Field(
        None,
        min_length=1,
        description="database of the leadership lease: a SQLAlchemy URL "
        "(postgresql://...) or a SQLite file path shared by the center nodes",
    )
    lease_name: str | None = Field(
        None, min_length=1, description="the federation's lease row (default: name)"
    )
    lease_s: float = Field(
        2.0, gt=0, description="lease length: a dead center is replaced after ~lease_s"
    )
    drift: float = Field(
        0.05, ge=0, lt=0.5, description="bound on the clock-rate error of any center host"
    )
    poll_s: float = Field(0.1, gt=0, description="how often a standby reads the lease")
    rejoin_timeout_s: float = Field(
        2.0,
        gt=0,
        description="how long a resumed center waits for the previous participants "
        "before it starts with the quorum",
    )
    linger_s: float = Field(
        2.0,
        ge=0,
        description="how long the last center keeps serving after the last round "
        "(reconnecting participants learn that the run is over)",
    )

    def check(self, checkpoint: CheckpointConfig) -> None:
        """What the center nodes need besides ``checkpoint.enabled`` (compat checks that).

        Raises:
            ValueError: no lease database, or no shared object tier written every round
                (an update is acknowledged once its round is there, so a standby
                resumes from it without losing an acknowledged update).
        """
        if not self.enabled:
            return
        if self.lease_url is None:
            raise ValueError(
                "failover.enabled needs failover.lease_url: the database (SQLAlchemy URL or "
                "a SQLite path) every center node reads the lease from"
            )
        if checkpoint.enabled and checkpoint.object_url is None:
            raise ValueError(
                "failover.enabled needs checkpoint.object_url: the object tier (s3://... or "
                "a shared path) is where a standby finds the active center's checkpoints"
            )
        if checkpoint.enabled and checkpoint.object_every != 1:
            raise ValueError(
                f"failover.enabled needs checkpoint.object_every=1 (got "
                f"{checkpoint.object_every}): an update is acknowledged once its round is "
                "in the shared object tier, which a standby resumes from"
            )


FAILOVER_DOCS = "docs/resilience-failover.md"

SIMULATION_REFUSAL = (
    f"failover.enabled ({FAILOVER_DOCS}) is the deployment runtime's (fedstrata serve "
    "center): a simulation has no center process to lose; a simulation resumes from its "
    "checkpoints with `fedstrata run --resume RUN_DIR` (leave failover.enabled false)"
)


def runtime_refusal(config: FedConfig) -> str | None:
    """Why the deployment runtime refuses ``config``'s checkpoint or failover settings
    (None: it honours them).

    The runtime's center checkpoints as a center node (:class:`FailoverConfig`): every
    round in the shared object tier, under the lease, with its DP budget (central or
    distributed) and, under secure aggregation, the secure aggregator's record (the
    round in flight is abandoned and run again; a client never sends one round's masked
    input to two terms: :mod:`fedstrata.runtime.secagg_failover`). The clients keep their
    error-feedback residuals across terms of one run, the round run again rolled back
    (:mod:`fedstrata.runtime.client_terms`).
    """
    ckpt, fo = config.checkpoint, config.failover
    if fo.enabled and not ckpt.enabled:
        return (
            f"failover.enabled ({FAILOVER_DOCS}) takes effect only with checkpoint.enabled "
            "(docs/resilience.md): a standby resumes from the active center's checkpoints"
        )
    if not ckpt.enabled:
        return None
    if not fo.enabled:
        return (
            "checkpoint.enabled (docs/resilience.md) on the deployment runtime is honoured by "
            f"its center nodes ({FAILOVER_DOCS}): set failover.enabled, failover.lease_url, "
            "checkpoint.object_url and checkpoint.object_every=1; a restarted or standby "
            "center then resumes from the newest checkpoint"
        )
    return None
