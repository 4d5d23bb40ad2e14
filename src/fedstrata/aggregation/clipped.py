"""Clip every decoded update on the server before it is folded (central DP + lossy codecs).

Central DP (McMahan et al., ICLR 2018, "DP-FedAvg") needs each client's contribution
to the round's sum bounded by ``clip_norm``: that bound is the sensitivity the Gaussian
noise is calibrated to. The client clips before encoding, but a lossy codec can push
the *decoded* vector past it: stochastic quantization rounds coordinates up, random-k
rescales the kept coordinates by ``d / k``, and error feedback adds the client's
residual of earlier rounds. :class:`ClipDecoded` wraps the wire codec and clips each
decoded update to ``clip_norm`` on the (trusted) central-DP server, so whatever
aggregator folds it — the weighted mean through :meth:`ClipDecoded.accumulate`, a robust
or settlement-weighted one through :meth:`ClipDecoded.decode` — only ever sees vectors
of norm at most ``clip_norm``. The bound is exact (float64 norm, scaled by
``clip_norm / norm`` and checked again after the float32 cast); it does not depend on
the codec, so the accountant's analysis and ε are those of the dense run.

Clipping changes nothing for updates already within the bound; for random-k at low
density it shrinks most updates (the rescaled vector is ~``sqrt(d/k)`` times longer),
which biases the mean toward zero: prefer top-k or a lower ``clip_norm`` there.

The client half (:meth:`ClipDecoded.encode`) is the inner codec's, residuals included.
Counters of the decoded and folded norms since :meth:`ClipDecoded.take_stats` are kept
for the run's metrics; they live on the server's copy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import final

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import ClientContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.errors import ConfigError
from fedstrata.pipeline.stage import Codec

__all__ = ["ClipDecoded", "ClipStats", "clip_to_norm"]


def clip_to_norm(vector: FloatVector, clip_norm: float) -> tuple[FloatVector, float]:
    """``vector`` scaled to L2 norm at most ``clip_norm`` (a new array) and its norm before.

    The scale is computed in float64 and shrunk by one float32 ulp where the cast
    rounds the result above the bound, so the returned vector's norm is <= ``clip_norm``.
    """
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm <= clip_norm:
        return vector.astype(np.float32, copy=True), norm
    scale = clip_norm / norm
    out = (vector.astype(np.float64) * scale).astype(np.float32)
    while float(np.linalg.norm(out.astype(np.float64))) > clip_norm:
        scale *= 1 - 2.0**-23
        out = (vector.astype(np.float64) * scale).astype(np.float32)
    return out, norm


@dataclass
class ClipStats:
    """Norms of the updates decoded since the last :meth:`ClipDecoded.take_stats`.

    Attributes:
        decoded: updates decoded.
        clipped: of them, those whose decoded norm exceeded ``clip_norm``.
        decoded_norm_max: largest norm as decoded.
        folded_norm_max: largest norm as folded (after the clip; <= ``clip_norm``).
    """

    decoded: int = 0
    clipped: int = 0
    decoded_norm_max: float = 0.0
    folded_norm_max: float = 0.0


@final
@dataclass(eq=False)
class ClipDecoded:
    """A codec whose server half clips each decoded update to ``clip_norm``.

    Implements :class:`~fedstrata.pipeline.Codec` around ``inner``.

    Raises:
        ConfigError: ``clip_norm`` is not finite and > 0.
    """

    inner: Codec
    clip_norm: float
    stats: ClipStats = field(default_factory=ClipStats)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(
                f"ClipDecoded.clip_norm must be finite and > 0, got {self.clip_norm}"
            )

    @property
    def name(self) -> str:
        return self.inner.name  # the wire format is the inner codec's

    def encode(self, vector: FloatVector, ctx: ClientContext) -> Payload:
        """The client half: the inner codec's (its error-feedback state included)."""
        return self.inner.encode(vector, ctx)

    def decode(self, payload: Payload) -> FloatVector:
        """The inner codec's decoding, clipped to ``clip_norm``.

        Raises:
            PayloadError: the payload is malformed.
        """
        clipped, norm = clip_to_norm(self.inner.decode(payload), self.clip_norm)
        s = self.stats
        s.decoded += 1
        s.clipped += int(norm > self.clip_norm)
        s.decoded_norm_max = max(s.decoded_norm_max, norm)
        folded = float(np.linalg.norm(clipped.astype(np.float64)))
        s.folded_norm_max = max(s.folded_norm_max, folded)
        return clipped

    def accumulate(self, payload: Payload, out: NDArray[np.float64], weight: float) -> None:
        """Add ``weight * decode(payload)`` into ``out``; on error ``out`` is unchanged.

        Raises:
            PayloadError: malformed payload.
            ValueError: the decoded vector does not fit ``out``.
        """
        vector = self.decode(payload)
        out += np.multiply(vector, weight, dtype=np.float64)

    def take_stats(self) -> ClipStats:
        """The counters since the last call, which start again from zero."""
        stats, self.stats = self.stats, ClipStats()
        return stats
