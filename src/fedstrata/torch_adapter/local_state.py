"""A task's local buffers kept per client (FedBN).

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021: batch-norm statistics stay with each client, never
averaged. The buffers named in ``Task.local_buffers`` (exact names or prefixes, all
dtypes, e.g. ``bn.running_mean`` and ``bn.num_batches_tracked``) are loaded from a
:class:`~fedstrata.core.state.ClientStateStore` before a client trains or evaluates
and saved after it trains, so a client keeps its own copy whichever worker process
trains it. A client seen for the first time gets the factory's initial values, which
are also what the module holds outside a client's turn (central evaluation).
"""

from __future__ import annotations

from typing import final

import numpy as np
import torch
from torch import nn

from fedstrata.core.state import ClientStateStore
from fedstrata.errors import CheckpointCorrupt
from fedstrata.torch_adapter.binding import is_local

__all__ = ["LocalBuffers"]

KEY_PREFIX = "local_buffer_"


@final
class LocalBuffers:
    """The module's per-client buffers, with their initial values."""

    def __init__(self, module: nn.Module, local_buffers: tuple[str, ...]) -> None:
        named = [(n, b) for n, b in module.named_buffers() if is_local(n, local_buffers)]
        self._module = module
        self.names = tuple(n for n, _ in named)
        self._initial = [b.detach().clone() for _, b in named]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def _tensors(self) -> list[torch.Tensor]:
        """The module's buffers now (a custom loop may have reassigned one)."""
        current = dict(self._module.named_buffers())
        return [current[n] for n in self.names]

    def load(self, store: ClientStateStore, client_id: int) -> None:
        """Copy the client's saved values into the module (initial values if none).

        Raises:
            CheckpointCorrupt: a saved value has another shape than the buffer.
        """
        with torch.no_grad():
            for i, (name, tensor) in enumerate(zip(self.names, self._tensors, strict=True)):
                saved = store.get(client_id, f"{KEY_PREFIX}{i}")
                if saved is None:
                    tensor.copy_(self._initial[i])
                    continue
                if tuple(saved.shape) != tuple(tensor.shape):
                    raise CheckpointCorrupt(
                        f"client {client_id}'s saved local buffer {name!r} has shape "
                        f"{tuple(saved.shape)}, the model's has {tuple(tensor.shape)}"
                    )
                tensor.copy_(torch.from_numpy(np.asarray(saved)))

    def save(self, store: ClientStateStore, client_id: int) -> None:
        """Store the module's current values as the client's."""
        for i, tensor in enumerate(self._tensors):
            store.put(client_id, f"{KEY_PREFIX}{i}", tensor.detach().cpu().numpy().copy())

    def reset(self) -> None:
        """Put the factory's initial values back into the module."""
        with torch.no_grad():
            for tensor, initial in zip(self._tensors, self._initial, strict=True):
                tensor.copy_(initial)
