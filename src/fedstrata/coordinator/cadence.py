"""When the model is evaluated: the one cadence rule every driver follows."""

from __future__ import annotations

__all__ = ["evaluation_due"]


def evaluation_due(round_idx: int, every: int, *, last: bool) -> bool:
    """Whether the model after round ``round_idx`` (0-based) is evaluated.

    Every ``every`` rounds (after rounds ``every - 1``, ``2 * every - 1``, …) and after
    the ``last`` one, whatever the cadence.
    """
    return last or (round_idx + 1) % every == 0
