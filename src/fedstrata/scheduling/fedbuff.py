"""Buffered asynchronous aggregation (FedBuff) as a sans-IO state machine.

FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022): clients train on whatever model version they last received and report
their update tagged with that version. The server keeps a buffer; each arriving update
is down-weighted by its staleness ``tau = version_now - version_trained_on`` with
``s(tau) = 1 / sqrt(1 + tau)`` (or ``(1 + tau) ** -exponent``, configurable) and added
to the buffer. Every ``K`` accepted arrivals the server applies

    x <- x + eta_g * sum_i s(tau_i) w_i delta_i / sum_i w_i

(``delta = new - old``; with unit weights this is the paper's ``1/K`` average) and
increments the model version. Updates staler than ``max_staleness`` are rejected.

With an aggregator (:mod:`fedstrata.aggregation`: median, trimmed mean, Krum or your
own) the buffer is that aggregator's state instead of a running sum: each accepted
update enters as ``s(tau) * delta`` with its weight ``w``, and every ``K`` arrivals
the step is ``eta_g * rule(buffer)`` over those ``K`` staleness-scaled updates (a
robust rule sees each buffered client once, unweighted). Memory is the aggregator's:
O(K x model) for the robust rules, which hold every buffered vector, O(model) for the
mean. Without an aggregator the running float32 sum above is kept (the paper's rule).

:class:`FedBuffServer` does no I/O and reads no clock. It holds the buffer (one flat
float32 vector, or the aggregator's state) and the model version; the model itself
stays with the driver. The rules that judge an update (its staleness, the
``max_staleness`` cut, the weight ``s(tau)``) are :class:`FedBuffConfig`'s, written
once: the round engine's buffered policy (:mod:`fedstrata.coordinator.buffered`)
applies them to the clients it dispatched, and the simulator executes its ``Accept``
and step commands with :meth:`FedBuffServer.fold` and :meth:`FedBuffServer.flush`.
:meth:`FedBuffServer.receive` applies them itself, for a driver whose clients come
with the version they hold instead of being dispatched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.aggregation.protocol import Aggregator
from fedstrata.core.params import FloatVector
from fedstrata.core.update import check_update
from fedstrata.errors import ConfigError, InvalidUpdateError, ProtocolError

__all__ = [
    "Accepted",
    "Applied",
    "FedBuffConfig",
    "FedBuffServer",
    "FedBuffState",
    "Rejected",
    "staleness_weight",
]

log = logging.getLogger(__name__)


class StalenessKind(StrEnum):
    """Shape of the staleness weight ``s(tau)``."""

    POLYNOMIAL = "polynomial"  # (1 + tau) ** -exponent; exponent 0.5 is the paper's
    CONSTANT = "constant"  # 1: no down-weighting


def staleness_weight(
    tau: NDArray[np.int64] | int,
    exponent: float = 0.5,
    kind: StalenessKind = StalenessKind.POLYNOMIAL,
) -> NDArray[np.float64]:
    """``s(tau)``: ``(1 + tau) ** -exponent`` (the paper: exponent 0.5), or 1.

    Raises:
        ConfigError: negative staleness.
    """
    t = np.asarray(tau, dtype=np.float64)
    if (t < 0).any():
        raise ConfigError(f"staleness must be >= 0, got {t.min()}")
    if kind is StalenessKind.CONSTANT:
        return np.ones_like(t)
    return (1.0 + t) ** -exponent


@dataclass(frozen=True)
class FedBuffConfig:
    """FedBuff's knobs.

    Attributes:
        buffer_size: K, accepted updates per server step, >= 1.
        server_lr: eta_g, > 0.
        max_staleness: updates with larger staleness are rejected, >= 0.
        staleness_exponent: exponent of the polynomial ``s(tau)``, >= 0.
        staleness_kind: polynomial (default) or constant.
    """

    buffer_size: int = 10
    server_lr: float = 1.0
    max_staleness: int = 100
    staleness_exponent: float = 0.5
    staleness_kind: StalenessKind = StalenessKind.POLYNOMIAL

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"FedBuffConfig.buffer_size must be >= 1, got {self.buffer_size}")
        if not self.server_lr > 0:
            raise ConfigError(f"FedBuffConfig.server_lr must be > 0, got {self.server_lr}")
        if self.max_staleness < 0:
            raise ConfigError(
                f"FedBuffConfig.max_staleness must be >= 0, got {self.max_staleness}"
            )
        if not self.staleness_exponent >= 0:
            raise ConfigError(
                f"FedBuffConfig.staleness_exponent must be >= 0, got {self.staleness_exponent}"
            )

    @staticmethod
    def staleness(client_id: int, version: int, base_version: int) -> int:
        """``tau``: server versions between ``base_version`` and ``version``.

        Raises:
            ProtocolError: ``base_version`` is newer than ``version`` or negative.
        """
        if not 0 <= base_version <= version:
            raise ProtocolError(
                f"client {client_id} trained on version {base_version}, server is at {version}"
            )
        return version - base_version

    def rejection(self, staleness: int) -> str | None:
        """Why an update ``staleness`` versions old is dropped, or None if it counts."""
        if staleness > self.max_staleness:
            return f"staleness {staleness} > max_staleness {self.max_staleness}"
        return None

    def judge(self, client_id: int, version: int, base_version: int) -> tuple[int, str | None]:
        """An update trained on ``base_version`` arriving at ``version``: its staleness
        and why it is dropped (None if it counts); a dropped update is logged.

        Raises:
            ProtocolError: see :meth:`staleness`.
        """
        tau = self.staleness(client_id, version, base_version)
        reason = self.rejection(tau)
        if reason is not None:
            log.warning(
                "client %d: update %d versions stale (max %d), rejected",
                client_id,
                tau,
                self.max_staleness,
            )
        return tau, reason

    def scale(self, staleness: int) -> float:
        """``s(tau)``, the factor an update ``staleness`` versions old is scaled by."""
        return float(staleness_weight(staleness, self.staleness_exponent, self.staleness_kind))


@dataclass(frozen=True)
class Rejected:
    """The update was dropped; the buffer did not change."""

    client_id: int
    staleness: int
    reason: str


@dataclass(frozen=True)
class Accepted:
    """The update is in the buffer; ``buffered`` updates wait for the next step."""

    client_id: int
    staleness: int
    weight: float
    buffered: int


@dataclass(frozen=True, eq=False)
class Applied:
    """The buffer is full: add ``step`` to the model, which becomes ``new_version``.

    Attributes:
        step: ``server_lr * sum s(tau) w delta / sum w`` (float32, owned by the caller).
        mean_delta: the same without ``server_lr``, for a server optimizer of your own.
        new_version: the model version after the step.
        client_id: the client whose arrival filled the buffer.
        staleness: that update's staleness.
        mean_staleness: mean staleness of the updates in this step.
    """

    step: FloatVector
    mean_delta: FloatVector
    new_version: int
    client_id: int
    staleness: int
    mean_staleness: float


Decision = Rejected | Accepted | Applied


@dataclass(frozen=True, eq=False)
class FedBuffState:
    """Checkpointable state: version, buffer sums and counters."""

    version: int
    buffer: FloatVector
    weight_sum: float
    count: int
    staleness_sum: int


class FedBuffServer:
    """FedBuff's server half over flat float32 updates of ``dim`` entries."""

    def __init__(
        self,
        dim: int,
        config: FedBuffConfig | None = None,
        version: int = 0,
        aggregator: Aggregator[Any] | None = None,
    ) -> None:
        """An empty buffer at model ``version``; ``aggregator`` replaces the running sum.

        Raises:
            ConfigError: ``dim`` < 1 or ``version`` < 0.
        """
        if dim < 1 or version < 0:
            raise ConfigError(
                f"FedBuffServer needs dim >= 1 and version >= 0, got {dim}, {version}"
            )
        self.config = config or FedBuffConfig()
        self._dim = dim
        self._state = FedBuffState(version, np.zeros(dim, np.float32), 0.0, 0, 0)
        self.aggregator = aggregator
        self._agg_state: object = None if aggregator is None else aggregator.init(dim)

    @property
    def version(self) -> int:
        """The model version clients should be given (and tag their updates with)."""
        return self._state.version

    @property
    def state(self) -> FedBuffState:
        """A copy of the whole state.

        Raises:
            ConfigError: the buffer is an aggregator's state (not a running sum).
        """
        if self.aggregator is not None:
            raise ConfigError("FedBuffServer.state: an aggregator's buffer is not checkpointed")
        s = self._state
        return FedBuffState(s.version, s.buffer.copy(), s.weight_sum, s.count, s.staleness_sum)

    def load_state(self, state: FedBuffState) -> None:
        """Restore a state taken with :attr:`state`.

        Raises:
            ConfigError: the buffer does not have ``dim`` float32 entries.
        """
        if state.buffer.shape != (self._dim,) or state.buffer.dtype != np.float32:
            raise ConfigError(f"FedBuffState.buffer must be float32 ({self._dim},)")
        self._state = state

    def receive(
        self, client_id: int, delta: FloatVector, base_version: int, weight: float = 1.0
    ) -> Decision:
        """Take one client's update trained on model ``base_version``: judge it with the
        config's rules, fold it, and step when ``K`` are buffered.

        Raises:
            ProtocolError: ``base_version`` is newer than the server's version or negative.
            InvalidUpdateError: wrong dtype/shape, NaN/Inf, or a non-positive weight.
        """
        c = self.config
        tau, reason = c.judge(client_id, self.version, base_version)
        if reason is not None:
            return Rejected(client_id, tau, reason)
        scale = c.scale(tau)
        buffered = self.fold(client_id, delta, weight, tau, scale)
        if buffered < c.buffer_size:
            return Accepted(client_id, tau, scale * weight, buffered)
        return self.flush(client_id, tau)

    def fold(
        self, client_id: int, delta: FloatVector, weight: float, staleness: int, scale: float
    ) -> int:
        """Add ``scale * delta`` with ``weight`` to the buffer (a coordinator's ``Accept``
        of an update ``staleness`` versions old); returns the updates now buffered.

        Raises:
            InvalidUpdateError: wrong dtype/shape, NaN/Inf, or a non-positive weight.
        """
        if not (np.isfinite(weight) and weight > 0):
            raise InvalidUpdateError(client_id, f"weight must be finite and > 0, got {weight}")
        self._check(client_id, delta)
        s = self._state
        if self.aggregator is None:
            np.add(s.buffer, np.float32(scale * weight) * delta, out=s.buffer)
        else:
            self._agg_state = self.aggregator.accumulate(
                self._agg_state, np.float32(scale) * delta, weight, client_id=client_id
            )
        self._state = FedBuffState(
            s.version, s.buffer, s.weight_sum + weight, s.count + 1, s.staleness_sum + staleness
        )
        return self._state.count

    def _check(self, client_id: int, delta: FloatVector) -> None:
        check_update(client_id, delta, self._dim)

    def flush(self, client_id: int, staleness: int) -> Applied:
        """The server step over the buffered updates; the buffer empties and the version
        advances. ``client_id`` and ``staleness``: the update that completed the buffer.

        Raises:
            ProtocolError: the buffer is empty.
        """
        s = self._state
        if s.count == 0:
            raise ProtocolError(f"FedBuff step at version {s.version} with an empty buffer")
        if self.aggregator is None:
            mean = s.buffer / np.float32(s.weight_sum)
        else:
            mean = self.aggregator.finalize(self._agg_state)
            self._agg_state = self.aggregator.init(self._dim)
        step = mean * np.float32(self.config.server_lr)
        mean_tau = s.staleness_sum / s.count
        self._state = FedBuffState(s.version + 1, np.zeros(self._dim, np.float32), 0.0, 0, 0)
        log.info(
            "FedBuff: applied %d updates (mean staleness %.2f), version %d",
            s.count,
            mean_tau,
            self._state.version,
        )
        return Applied(step, mean, self._state.version, client_id, staleness, mean_tau)
