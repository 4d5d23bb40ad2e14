"""Round and client contexts, and reproducible per-(round, client, stage) randomness.

There is no global random state in fedstrata: every random draw comes from a
``numpy.random.Generator`` derived from one root seed and the coordinates of the
draw (round, client, stage). The same seed therefore gives the same run whatever the
number of worker processes or the order in which clients are trained.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from fedstrata.errors import ConfigError

__all__ = ["ClientContext", "RoundContext", "derive_rng", "derive_seed"]

SERVER = -1  # client id used for server-side draws


def _stage_key(stage: str) -> int:
    return zlib.crc32(stage.encode("utf-8"))


def derive_seed(root_seed: int, round_idx: int, client_id: int, stage: str) -> int:
    """A 63-bit integer seed for the (round, client, stage) coordinates.

    Useful for libraries that take an integer seed (e.g. ``torch.Generator``).
    """
    seq = np.random.SeedSequence([root_seed, round_idx + 1, client_id + 2, _stage_key(stage)])
    return int(seq.generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1 << 31, 1]))


def derive_rng(root_seed: int, round_idx: int, client_id: int, stage: str) -> np.random.Generator:
    """A fresh generator for the (round, client, stage) coordinates."""
    seq = np.random.SeedSequence([root_seed, round_idx + 1, client_id + 2, _stage_key(stage)])
    return np.random.Generator(np.random.PCG64(seq))


@dataclass(frozen=True)
class RoundContext:
    """What every participant knows about the current round.

    Attributes:
        round_idx: zero-based round number.
        root_seed: the run's root seed.
        deadline_s: the round's deadline in (simulated or real) seconds from its start,
            or ``None`` for no deadline.
    """

    round_idx: int
    root_seed: int
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.round_idx < 0:
            raise ConfigError(f"RoundContext.round_idx must be >= 0, got {self.round_idx}")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ConfigError(f"RoundContext.deadline_s must be > 0, got {self.deadline_s}")

    def rng(self, stage: str) -> np.random.Generator:
        """Server-side generator for ``stage`` in this round."""
        return derive_rng(self.root_seed, self.round_idx, SERVER, stage)

    def for_client(self, client_id: int) -> ClientContext:
        """The context a client trains under in this round."""
        return ClientContext(round=self, client_id=client_id)


@dataclass(frozen=True)
class ClientContext:
    """A client's view of a round: the round context plus its own id."""

    round: RoundContext
    client_id: int

    @property
    def round_idx(self) -> int:
        return self.round.round_idx

    def rng(self, stage: str) -> np.random.Generator:
        """Generator for ``stage`` of this client in this round."""
        return derive_rng(self.round.root_seed, self.round.round_idx, self.client_id, stage)

    def seed(self, stage: str) -> int:
        """Integer seed for ``stage`` of this client in this round."""
        return derive_seed(self.round.root_seed, self.round.round_idx, self.client_id, stage)
