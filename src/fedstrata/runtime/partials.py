"""A tier's partial aggregate on the wire: exact (float64) or re-compressed.

An aggregator tier sends its clients' weighted-mean partial to its parent. Dense, it is
:func:`~fedstrata.runtime.records.encode_partial` (``MeanState.to_arrays``: the float64
sum, 2x a dense update). Re-compressed (``topology.partial_compression``, or a codec
given to :class:`~fedstrata.runtime.aggregator.TierAggregator`), the partial's mean is
encoded by the same function the simulator's tree uses
(:func:`fedstrata.aggregation.hop.encode_partial_mean`, with the tier's own error
feedback keyed by its participant id) and travels as the codec's payload bytes next to
the partial's weight, count and metric sums, in one ``.npz`` archive (CRC-checked
members; ``payload`` is the marker). The parent merges it with
:func:`~fedstrata.aggregation.hop.merge_partial_mean`, decoding the chain from the
payload's own parameter block (no configuration needed at the parent).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedstrata.aggregation.edge_means import CenterState, OverEdgeMeans
from fedstrata.aggregation.hop import encode_partial_mean, merge_partial_mean
from fedstrata.aggregation.mean import MeanState
from fedstrata.compress import ChainCodec, CompressionSpec
from fedstrata.core.context import ClientContext
from fedstrata.core.payload import Payload
from fedstrata.errors import AggregationError, PayloadError
from fedstrata.pipeline.stage import Codec

__all__ = [
    "CLIENTS_KEY",
    "CompressedPartial",
    "encode_compressed_partial",
    "merge_compressed",
    "read_partial",
    "read_tier_partial",
]

_PAYLOAD = "payload"
CLIENTS_KEY = "accepted_clients"
"""The .npz member of a partial that lists the tier's accepted clients (the
simulator's client outcome of the tier's share of the round, :mod:`.tier_combos`)."""


@dataclass(frozen=True, eq=False)
class CompressedPartial:
    """A re-compressed partial: the mean's payload and the partial's weight, count and
    metric sums (``sent``, whose ``weighted_sum`` is empty)."""

    payload: Payload
    sent: MeanState

    @property
    def count(self) -> int:
        return self.sent.count

    @property
    def total_weight(self) -> float:
        return self.sent.total_weight


def encode_compressed_partial(
    state: MeanState, codec: Codec, ctx: ClientContext, clients: Sequence[int] | None = None
) -> bytes:
    """``state`` re-compressed for the hop up (see the module docstring); ``clients``:
    the tier's accepted clients, reported with it (None: not reported).

    Raises:
        AggregationError: an empty partial.
    """
    payload = encode_partial_mean(state, codec, ctx)
    sent = MeanState(np.zeros(0), state.total_weight, state.count, state.metrics)
    arrays = sent.to_arrays()
    arrays[_PAYLOAD] = np.frombuffer(payload.to_bytes(), dtype=np.uint8)
    if clients is not None:
        arrays[CLIENTS_KEY] = np.asarray(clients, dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def read_partial(data: bytes) -> MeanState | CompressedPartial:
    """A partial from the wire: exact (:func:`~fedstrata.runtime.records.encode_partial`)
    or re-compressed (:func:`encode_compressed_partial`).

    Raises:
        PayloadError: not an .npz archive, a corrupted member or a malformed payload.
        AggregationError: the arrays do not form a valid partial.
    """
    return read_tier_partial(data)[0]


def read_tier_partial(
    data: bytes,
) -> tuple[MeanState | CompressedPartial, tuple[int, ...] | None]:
    """:func:`read_partial`, and the accepted clients the tier reported with it (None:
    none reported).

    Raises:
        PayloadError: not an .npz archive, a corrupted member, a malformed payload or
            client list.
        AggregationError: the arrays do not form a valid partial.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise PayloadError(f"partial aggregate is not a valid .npz archive: {exc}") from None
    raw = arrays.pop(_PAYLOAD, None)
    listed = arrays.pop(CLIENTS_KEY, None)
    clients = None
    if listed is not None:
        if listed.dtype != np.int64 or listed.ndim != 1:
            raise PayloadError("partial: its accepted clients must be a 1-D int64 array")
        clients = tuple(int(c) for c in listed.tolist())
    state = MeanState.from_arrays(arrays)
    if raw is None:
        return state, clients
    if raw.dtype != np.uint8 or raw.ndim != 1 or state.size != 0:
        raise PayloadError("compressed partial: payload must be 1-D bytes and the sum empty")
    return CompressedPartial(Payload.from_bytes(raw.tobytes()), state), clients


def merge_compressed(
    state: Any, partial: CompressedPartial, sender: int, center: object = None, *, size: int = 0
) -> Any:
    """Merge a re-compressed partial into ``state``: decoded straight into the sum of
    the weighted mean, or, when ``center`` is the center's rule over its edges' means
    (:class:`~fedstrata.aggregation.edge_means.OverEdgeMeans`, a robust or custom
    ``server.aggregator``), into that rule as the child's decoded mean, as the
    simulator's center does (``size``: the model's entries).

    Raises:
        PayloadError: a malformed payload (``state`` is unchanged).
        ShapeError: a payload of another size.
    """
    if isinstance(center, OverEdgeMeans) and isinstance(state, CenterState):
        decoder = ChainCodec(CompressionSpec(), size)
        return center.merge_payload(state, decoder, partial.payload, partial.sent, sender=sender)
    if not isinstance(state, MeanState):
        raise AggregationError(f"a re-compressed partial merges into a mean, not {type(state)}")
    decoder = ChainCodec(CompressionSpec(), state.size)
    return merge_partial_mean(state, decoder, partial.payload, partial.sent, sender=sender)
