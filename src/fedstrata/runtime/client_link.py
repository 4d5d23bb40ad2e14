"""A client agent's contract with the outside (no gRPC here).

:class:`CenterLink` is the transport seam: what a
:class:`~fedstrata.runtime.client.ClientAgent` needs from its connection
(:class:`~fedstrata.runtime.link.GrpcLink` in deployment, an in-memory fake in tests).
:class:`Backoff` is its reconnection policy (exponential backoff with jitter; the
random source and the ``Sleep`` are injected), :class:`ClientReport` what it did, and
:func:`decode_model` reads the model a broadcast payload carries (a tier decodes its
parent's the same way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedstrata.core.params import FloatVector
from fedstrata.core.payload import CodecId, Payload
from fedstrata.errors import ConfigError, PayloadError
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.records import TaskSpec
from fedstrata.runtime.sched_reports import DeviceReport, RoundTimings

__all__ = ["Backoff", "CenterLink", "ClientReport", "Sleep", "decode_model"]


class CenterLink(Protocol):
    """The transport seam: what a client agent needs from its connection."""

    def session(
        self, live_clients: int = 0, profile: DeviceReport | None = None
    ) -> AsyncIterator[TaskSpec]: ...

    async def download(self, round_idx: int) -> Payload: ...

    async def download_downlink(self, round_idx: int, ask: DownlinkAsk) -> bytes:
        """The downlink message for a client holding ``ask.version``."""
        ...

    async def submit(
        self,
        round_idx: int,
        payload: Payload,
        num_examples: int,
        metrics: Mapping[str, float],
        timings: RoundTimings | None = None,
    ) -> tuple[bool, str]: ...

    async def reconnect(self) -> None:
        """Drop the connection (if any is left) and open a new one."""
        ...

    async def download_eval(self, round_idx: int) -> Payload: ...  # federated evaluation

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]: ...


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Reconnection policy: exponential backoff with "equal jitter".

    Attempt ``k`` (0-based) waits a uniform draw in ``[d/2, d]``, ``d = min(max_s,
    base_s * 2**k)``. Attributes: ``attempts`` consecutive failed connections before
    giving up (0: never reconnect); ``base_s`` and ``max_s`` in seconds.

    Raises:
        ConfigError: a negative count or a non-positive delay, or ``max_s < base_s``.
    """

    attempts: int = 6
    base_s: float = 0.5
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ConfigError(f"Backoff.attempts must be >= 0, got {self.attempts}")
        if not 0 < self.base_s <= self.max_s:
            raise ConfigError(
                f"Backoff needs 0 < base_s <= max_s, got base_s={self.base_s}, max_s={self.max_s}"
            )

    def delay_s(self, attempt: int, rng: np.random.Generator) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (0-based)."""
        cap = min(self.max_s, self.base_s * 2.0**attempt)
        return float(rng.uniform(cap / 2, cap))


@dataclass
class ClientReport:
    """What a client agent did: rounds trained, the center's refusals, reconnections."""

    rounds: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    reconnects: list[tuple[float, str]] = field(default_factory=list)


def decode_model(payload: Payload, size: int) -> FloatVector:
    """The float32 model carried by a broadcast payload.

    Raises:
        PayloadError: not a model payload, or of the wrong size.
    """
    if payload.codec != CodecId.MODEL_F32 or payload.params:
        raise PayloadError(f"expected a model payload, got codec {payload.codec.name}")
    if len(payload.body) != 4 * size:
        raise PayloadError(f"model payload has {len(payload.body)} bytes, expected {4 * size}")
    return np.frombuffer(payload.body, dtype="<f4").astype(np.float32)
