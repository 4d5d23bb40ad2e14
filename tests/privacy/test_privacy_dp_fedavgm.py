"""DP-FedAvgM: the central noise is added to the aggregate before the server momentum
sees it (the momentum post-processes the private release, so ε is DP-FedAvg's)."""

from __future__ import annotations

import numpy as np

from fedstrata.algorithms.server import FedAvgM
from fedstrata.coordinator.events import RoundOutcome
from fedstrata.coordinator.round_logic import server_step
from fedstrata.core.context import RoundContext
from fedstrata.core.params import FloatVector


class _RecordingNoise:
    """A hook that adds a known 'noise' vector and records what it returned."""

    applies_every_round = True

    def __init__(self) -> None:
        self.released: list[FloatVector] = []

    def start(self, round_idx: int) -> None:
        return None

    def aggregate(self, mean: FloatVector, accepted: int, ctx: RoundContext) -> FloatVector:
        out = (mean + np.float32(ctx.round_idx + 1)).astype(np.float32)
        self.released.append(out.copy())
        return out

    def finish(self, round_idx: int, accepted: int, loss: float | None) -> None:
        return None


def test_the_momentum_steps_on_the_noised_aggregate_only() -> None:
    hook, opt = _RecordingNoise(), FedAvgM(server_lr=0.5, momentum=0.9)
    params = np.zeros(3, np.float32)
    state = opt.init(params)
    for r in range(3):
        outcome = RoundOutcome(r, 2, (0, 1), (), (), 0.0, applied=True)
        mean = np.full(3, 0.1 * (r + 1), np.float32)
        params, state = server_step(
            outcome, params, state, lambda m=mean: m, hooks=(hook,), pipeline=None,
            optimizer=opt, broadcast=None, root_seed=0,
        )  # fmt: skip
    expected, velocity = np.zeros(3, np.float32), np.zeros(3, np.float32)
    for released in hook.released:  # the optimizer replayed on the hook's releases alone
        velocity = np.float32(0.9) * velocity + released
        expected = expected + np.float32(0.5) * velocity
    np.testing.assert_allclose(params, expected, rtol=1e-6)
