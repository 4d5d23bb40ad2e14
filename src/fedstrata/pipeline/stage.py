"""The update pipeline: client-side encode stages, a wire codec, server-side decode.

A :class:`Pipeline` is ``stages`` (real vector -> real vector on the client, with a
server half applied to the aggregate in reverse order) followed by one
:class:`Codec` (real vector -> :class:`~fedstrata.core.Payload` on the client,
decode-and-accumulate into the running sum on the server).

Order rules checked at construction (:meth:`Pipeline.__init__`):

* stage names are unique;
* a stage that declares ``requires_before`` (e.g. DP noise needs clipping) finds
  those stages earlier in the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.context import ClientContext, RoundContext
from fedstrata.core.params import FloatVector
from fedstrata.core.payload import Payload
from fedstrata.errors import PipelineError

__all__ = ["Codec", "Pipeline", "Stage"]


class Stage(Protocol):
    """A real -> real transform with a client half and a server half."""

    @property
    def name(self) -> str: ...

    @property
    def requires_before(self) -> frozenset[str]:
        """Names of stages that must come earlier in the pipeline."""
        ...

    def encode(self, vector: FloatVector, ctx: ClientContext) -> FloatVector:
        """Client half; may work in place and return its argument."""
        ...

    def decode(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Server half, applied to the aggregate (identity for most stages)."""
        ...


class Codec(Protocol):
    """Turns a real vector into wire bytes and back into a running sum."""

    @property
    def name(self) -> str: ...

    def encode(self, vector: FloatVector, ctx: ClientContext) -> Payload:
        """Encode a client's vector (may keep per-client state, e.g. residuals)."""
        ...

    def accumulate(self, payload: Payload, out: NDArray[np.float64], weight: float) -> None:
        """Decode ``payload`` and add ``weight * decoded`` into ``out`` in place.

        Raises:
            PayloadError: the payload is malformed; ``out`` is left unchanged.
        """
        ...

    def decode(self, payload: Payload) -> FloatVector:
        """Decode ``payload`` into a dense float32 vector."""
        ...


@dataclass(frozen=True, eq=False)
class Pipeline:
    """Ordered client stages plus the wire codec."""

    stages: tuple[Stage, ...]
    codec: Codec

    def __init__(self, stages: Sequence[Stage], codec: Codec) -> None:
        object.__setattr__(self, "stages", tuple(stages))
        object.__setattr__(self, "codec", codec)
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise PipelineError(f"pipeline stage {stage.name!r} appears twice")
            missing = stage.requires_before - seen
            if missing:
                raise PipelineError(
                    f"pipeline stage {stage.name!r} needs {sorted(missing)} earlier in the "
                    f"chain; got order {[s.name for s in self.stages]}"
                )
            seen.add(stage.name)

    def encode(self, vector: FloatVector, ctx: ClientContext) -> Payload:
        """Client side: run every stage in order, then the codec."""
        for stage in self.stages:
            vector = stage.encode(vector, ctx)
        return self.codec.encode(vector, ctx)

    def decode_aggregate(self, aggregate: FloatVector, ctx: RoundContext) -> FloatVector:
        """Server side: run the stages' server halves in reverse order."""
        for stage in reversed(self.stages):
            aggregate = stage.decode(aggregate, ctx)
        return aggregate
