"""The masking graph: full (Bonawitz 2017) or a randomly labelled Harary graph (SecAgg+).

Bell et al., CCS 2020, section 3: the Harary graph ``H(n, k)`` places the clients
on a ring and joins each to the ``k / 2`` nearest on either side; labelling the
ring positions with a random permutation (drawn from a public seed the server
announces) makes the graph look random to an adversary that picks whom to corrupt
before the seed is known. Every party rebuilds the same graph from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError

__all__ = ["NeighbourGraph"]


@dataclass(frozen=True)
class NeighbourGraph:
    """Who masks with whom.

    Attributes:
        num_clients: cohort size ``n``.
        degree: neighbours per client; ``n - 1`` means the full graph.
        seed: the public seed of the random labelling (ignored for the full graph).
    """

    num_clients: int
    degree: int
    seed: int
    _position: NDArray[np.int64] = field(init=False, repr=False, compare=False)
    _order: NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, k = self.num_clients, self.degree
        if not 1 <= k <= n - 1 or (k < n - 1 and k % 2):
            raise ConfigError(
                f"NeighbourGraph.degree must be n - 1 = {n - 1} or even in [2, {n - 2}], got {k}"
            )
        rng = np.random.Generator(np.random.PCG64(self.seed))
        order = rng.permutation(n).astype(np.int64)  # order[pos] = client
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_position", position)

    @property
    def full(self) -> bool:
        """Whether this is the complete graph."""
        return self.degree == self.num_clients - 1

    def neighbours(self, client: int) -> NDArray[np.int64]:
        """Sorted ids of ``client``'s neighbours.

        Raises:
            ConfigError: ``client`` is not in ``0 .. n - 1``.
        """
        n = self.num_clients
        if not 0 <= client < n:
            raise ConfigError(f"client id must be in [0, {n - 1}], got {client}")
        if self.full:
            ids = np.arange(n, dtype=np.int64)
            others: NDArray[np.int64] = ids[ids != client]
            return others
        half = self.degree // 2
        offsets = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
        picked: NDArray[np.int64] = np.sort(self._order[(self._position[client] + offsets) % n])
        return picked

    def are_neighbours(self, u: int, v: int) -> bool:
        """Whether ``u`` and ``v`` share a pairwise mask."""
        if u == v:
            return False
        if self.full:
            return True
        gap = abs(int(self._position[u]) - int(self._position[v]))
        return min(gap, self.num_clients - gap) <= self.degree // 2
