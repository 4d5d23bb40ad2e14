"""Client-side error feedback for the ring codec (Issue 12 part 4).

With error feedback a client adds what it did not send last time (its *residual*) to
this round's update before clipping, sparsifying and quantizing, and keeps the new
residual: ``work - sent``, where ``sent`` is the dense real vector the server
attributes to this client (its dequantized ring values on the shared support, not
rescaled by ``size / k``; Seide et al., Interspeech 2014; Karimireddy et al., ICML
2019). The residual never leaves the client, so masking is unaffected: the masked sum
is a sum of ordinary ring inputs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedstrata.core.params import FloatVector
from fedstrata.core.state import ClientStateStore
from fedstrata.errors import InvalidUpdateError

__all__ = ["RESIDUAL_KEY", "add_residual", "keep_residual"]

RESIDUAL_KEY = "ring_ef_residual"


def add_residual(store: ClientStateStore, client_id: int, vector: FloatVector) -> FloatVector:
    """``vector`` plus the client's stored residual (a new array).

    Raises:
        InvalidUpdateError: the stored residual has the wrong shape, or the sum is
            not finite.
    """
    stored = store.get(client_id, RESIDUAL_KEY)
    if stored is None:
        return vector.copy()
    if stored.shape != vector.shape:
        raise InvalidUpdateError(
            client_id, f"stored ring residual has shape {stored.shape}, expected {vector.shape}"
        )
    work = (vector + stored.astype(np.float32)).astype(np.float32)
    if not np.isfinite(work).all():
        raise InvalidUpdateError(client_id, "update plus ring residual is not finite")
    return work


def keep_residual(
    store: ClientStateStore,
    client_id: int,
    work: FloatVector,
    support: NDArray[np.int64],
    sent: NDArray[np.float64],
) -> None:
    """Store ``work - sent`` (``sent`` given on ``support``, zero elsewhere)."""
    residual = work.astype(np.float32, copy=True)
    residual[support] -= sent.astype(np.float32)
    store.put(client_id, RESIDUAL_KEY, residual)
