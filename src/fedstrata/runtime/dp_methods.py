"""The central-DP methods beyond DP-FedAvg at a runtime center, as the simulator runs them.

The hooks themselves are the simulator's, built once by
:func:`fedstrata.builders_privacy.privacy_hooks` (``privacy.adaptive_clip``: the
server clip of :class:`~fedstrata.aggregation.clipped.ClipDecoded` and Andrew et al.'s
noisy count; ``privacy.tree_aggregation``: DP-FTRL's
:class:`~fedstrata.privacy.ftrl.TreeDPHook`), and the cohorts DP-FTRL needs come from
the same :func:`fedstrata.builders_dp.cohort_selector`. This module adds what only a
center needs:

* :class:`CentralLoss`: ``privacy.switch_on_plateau`` moves the budget allocator's
  stage when the central evaluation loss plateaus; the simulator feeds it the loss of
  its test-set evaluation (:func:`~fedstrata.coordinator.cadence.evaluate_round`, every
  ``rounds.eval_every`` rounds and after the last); the center evaluates on the
  deployment's test set by the same rule and feeds the same loss. A deployment
  without a test set (a task without ``test_data``) is refused.
* :func:`checkpoint_refusal`: a center checkpoint (failover) carries the allocator's
  budget only; the adapted clip norm and DP-FTRL's tree position are not carried, so a
  center node refuses them (as the configuration does: ``checkpoint`` with
  ``adaptive_clip`` or ``dp_ftrl``, docs/compatibility.md) instead of resuming with a
  reset clip norm or tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedstrata.config import FedConfig
from fedstrata.coordinator.cadence import evaluate_round
from fedstrata.coordinator.hooks import RoundHook
from fedstrata.core.params import FloatVector
from fedstrata.core.training import LocalData, Trainer
from fedstrata.errors import ConfigError

__all__ = ["CentralLoss", "checkpoint_refusal", "plateau_loss"]


@dataclass(frozen=True, eq=False)
class CentralLoss:
    """The central evaluation loss of the model after a round, by the simulator's
    cadence (None when the round is not evaluated, as in the simulator).

    Attributes:
        trainer: evaluates the model.
        test: the center's test set.
        rounds: the run's rounds (the last one is always evaluated).
        eval_every: ``rounds.eval_every``.
    """

    trainer: Trainer
    test: LocalData
    rounds: int
    eval_every: int

    def __call__(self, round_idx: int, params: FloatVector) -> float | None:
        ev = evaluate_round(
            self.trainer, self.test, params, round_idx,
            rounds=self.rounds, eval_every=self.eval_every,
        )  # fmt: skip
        return ev.loss


def plateau_loss(
    config: FedConfig, trainer: Trainer, test_data: Callable[[], LocalData] | None
) -> CentralLoss | None:
    """What feeds ``privacy.switch_on_plateau`` at the center (None: not switched on).

    Raises:
        ConfigError: switched on, but the center has no test set to evaluate on.
    """
    p = config.privacy
    if not (p.enabled and p.switch_on_plateau):
        return None
    if test_data is None:
        raise ConfigError(
            "privacy.switch_on_plateau (docs/privacy.md) moves the privacy stage when the "
            "center's evaluation loss plateaus, and this deployment's center has no test "
            "set (give the task a test_data() function, docs/tasks.md, or leave "
            "privacy.switch_on_plateau at its default)"
        )
    r = config.rounds
    return CentralLoss(trainer, test_data(), r.rounds, r.eval_every)


def checkpoint_refusal(hooks: Iterable[RoundHook]) -> str | None:
    """Why a center checkpoint cannot carry these DP hooks' state (None: it can)."""
    from fedstrata.privacy.ftrl import TreeDPHook
    from fedstrata.privacy.hook import CentralDPHook

    for hook in hooks:
        if isinstance(hook, TreeDPHook):
            return (
                "a center checkpoint carrying DP-FTRL's tree position and ε spent "
                "(privacy.tree_aggregation) is not built yet (docs/compatibility.md)"
            )
        if isinstance(hook, CentralDPHook) and hook.adaptive is not None:
            return (
                "a center checkpoint carrying the adapted clip norm (privacy.adaptive_clip) "
                "is not built yet (docs/compatibility.md)"
            )
    return None
