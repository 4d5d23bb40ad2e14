"""Differential privacy at a runtime center (issue 13 part 2).

:class:`DpCenter` runs the simulator's DP round hooks (:mod:`fedstrata.privacy`:
``CentralDPHook`` for central DP, ``DistributedDPHook`` for noise shares under secure
aggregation, built by :func:`fedstrata.builders_privacy.privacy_hooks` from the same
configuration) around every round of the center: before a round the budget check
(:func:`~fedstrata.coordinator.round_logic.start_hooks`; an exhausted budget stops
the deployment cleanly, :attr:`stopped`), in the server step the central noise, after
it the accountant's record (ε spent, σ, the stage). The accountant and the staged
allocator live here, at the center only; :meth:`state_dict` / :meth:`load_state_dict`
hand their state to a checkpoint (a restarted center resumes its ε exactly). No gRPC.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from fedstrata.coordinator.hooks import RoundHook
from fedstrata.coordinator.round_logic import start_hooks
from fedstrata.core.metrics import PrivacySpent
from fedstrata.core.params import FloatVector
from fedstrata.core.statepart import StatePart
from fedstrata.errors import CheckpointCorrupt, ConfigError
from fedstrata.privacy import BudgetAllocator
from fedstrata.privacy.budget import AllocatorState
from fedstrata.runtime.dp_methods import checkpoint_refusal

__all__ = ["DpCenter", "DpPart"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class DpCenter:
    """The center's DP hooks and their budget; see the module docstring.

    Attributes:
        hooks: the round hooks of ``config.privacy`` (one DP hook).
        stopped: why the run stopped before its last round (the budget), or None.
        spent: the last round's record, per round.
        progress: the central evaluation loss of a round's model, fed to the budget
            allocator (``privacy.switch_on_plateau``,
            :class:`~fedstrata.runtime.dp_methods.CentralLoss`); None: not fed.
    """

    hooks: tuple[RoundHook, ...]
    stopped: str | None = None
    spent: dict[int, PrivacySpent] = field(default_factory=dict)
    progress: Callable[[int, FloatVector], float | None] | None = None

    @property
    def allocator(self) -> BudgetAllocator:
        """The budget allocator (owns the accountant).

        Raises:
            ConfigError: no hook carries one.
        """
        for hook in self.hooks:
            found = getattr(hook, "allocator", None)
            if isinstance(found, BudgetAllocator):
                return found
        raise ConfigError("the center's DP hooks carry no budget allocator")

    @property
    def epsilon_spent(self) -> float:
        """ε spent by the rounds recorded so far."""
        return self.allocator.epsilon_spent

    def start(self, round_idx: int) -> str | None:
        """Start ``round_idx`` in every hook; why the run must stop (budget), or None."""
        why = start_hooks(self.hooks, round_idx)
        if why is not None:
            log.warning("privacy budget: stopping before round %d: %s", round_idx, why)
            self.stopped = why
        return why

    def finish(
        self,
        round_idx: int,
        accepted: int,
        loss: float | None = None,
        *,
        params: FloatVector | None = None,
    ) -> PrivacySpent:
        """Record a round that ran (applied or not) in the accountant; without ``loss``
        the round's model ``params`` is evaluated by :attr:`progress` (if any), as the
        simulator feeds its evaluation loss to the hooks.

        Raises:
            ConfigError: no hook returned a privacy record.
        """
        if loss is None and params is not None and self.progress is not None:
            loss = self.progress(round_idx, params)
        records = [hook.finish(round_idx, accepted, loss) for hook in self.hooks]
        spent = next((r for r in records if isinstance(r, PrivacySpent)), None)
        if spent is None:
            raise ConfigError(f"round {round_idx}: no DP hook returned a privacy record")
        self.spent[round_idx] = spent
        log.info(
            "round %d: privacy ε spent %.6g (remaining %.6g)",
            round_idx, spent.epsilon_spent, spent.epsilon_remaining,
        )  # fmt: skip
        return spent

    def state_dict(self) -> AllocatorState:
        """The allocator's and accountant's state, for the center's checkpoint."""
        return self.allocator.state()

    def load_state_dict(self, state: AllocatorState) -> None:
        """Restore :meth:`state_dict`'s state (an allocator built from the same config).

        Raises:
            ConfigError: the state's plan does not fit this allocator.
        """
        self.allocator.load_state(state)


class DpPart:
    """A :class:`DpCenter`'s budget as a center checkpoint's part
    (:class:`~fedstrata.runtime.failover.StatePart`): the allocator's and accountant's
    state as JSON (floats exactly), so a center that takes over spends on from the ε the
    last committed round had spent, never from zero."""

    name = "dp"

    def __init__(self, dp: DpCenter) -> None:
        """Raises: ConfigError: the hooks hold state a checkpoint does not carry
        (:func:`~fedstrata.runtime.dp_methods.checkpoint_refusal`)."""
        why = checkpoint_refusal(dp.hooks)
        if why is not None:
            raise ConfigError(why)
        self.dp = dp

    def save(self) -> bytes:
        return json.dumps(dict(self.dp.allocator.state_dict().meta)).encode()

    def restore(self, blob: bytes) -> None:
        """Raises: CheckpointCorrupt: not this allocator's state."""
        try:
            meta = json.loads(blob)
        except ValueError as exc:
            raise CheckpointCorrupt(f"the center checkpoint's DP part: {exc}") from None
        if not isinstance(meta, dict):
            raise CheckpointCorrupt("the center checkpoint's DP part is not a JSON object")
        self.dp.allocator.load_state_dict(StatePart(meta=meta))
