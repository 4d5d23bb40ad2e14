"""One line per round about the clients whose updates were not used, grouped by reason.

A run in which every client fails the same way (a diverging learning rate gives every
update NaN/Inf entries) would otherwise log one warning per client per round; the
coordinator logs each client at INFO and this one summary at WARNING.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from fedstrata.coordinator.events import RoundOutcome

__all__ = ["NON_FINITE", "describe_losses", "failure_kind", "summarize_losses"]

NON_FINITE = "non-finite update (NaN/Inf)"
NON_FINITE_HINT = "non-finite updates mean local training diverged: lower client.lr"
_CLIENT_PREFIX = re.compile(r"^client \d+: ")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)):")
_SHOWN_IDS = 3
_MAX_REASON = 80


def _detail(reason: str) -> str:
    """A failure reason without a leading ``client N:`` (the summary names the client)."""
    return _CLIENT_PREFIX.sub("", reason, count=1)


def failure_kind(reason: str) -> str:
    """The group a failure reason belongs to: non-finite, an exception type, or itself."""
    detail = _detail(reason)
    if "NaN/Inf" in detail:
        return NON_FINITE
    match = _EXCEPTION.match(detail)
    if match:
        return match.group(1)
    return detail if len(detail) <= _MAX_REASON else detail[: _MAX_REASON - 1] + "…"


def _ids(clients: list[int]) -> str:
    shown = ", ".join(str(c) for c in clients[:_SHOWN_IDS])
    more = len(clients) - _SHOWN_IDS
    return f"clients {shown}" + (f" and {more} more" if more > 0 else "")


def _failed_parts(failed: Sequence[tuple[int, str]]) -> list[str]:
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for client_id, reason in failed:
        groups[failure_kind(reason)].append((client_id, reason))
    parts = []
    for kind, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        first_id, first_reason = members[0]
        if len(members) == 1:
            parts.append(f"client {first_id} dropped: {_detail(first_reason)}")
        else:
            ids = _ids(list(dict.fromkeys(c for c, _ in members)))  # a client may fail twice
            parts.append(f"{len(members)} x {kind} ({ids}; e.g. {_detail(first_reason)})")
    return parts


def _late_part(late: Sequence[int]) -> str:
    if len(late) == 1:
        return f"client {late[0]} missed the deadline"
    return f"{len(late)} missed the deadline ({_ids(sorted(late))})"


def summarize_losses(outcome: RoundOutcome) -> str | None:
    """A one-line account of the failed and late clients of a round, or None if none.

    Failures are grouped by :func:`failure_kind`, largest group first; a group of one
    keeps the client's full reason. Non-finite updates add a hint.
    """
    return describe_losses(outcome.failed, outcome.late, outcome.selected)


def describe_losses(
    failed: Sequence[tuple[int, str]], late: Sequence[int], expected: int
) -> str | None:
    """:func:`summarize_losses` for any driver: ``(client, reason)`` failures, late ids.

    Args:
        failed: failed updates with their reasons.
        late: clients whose updates came too late or never.
        expected: updates expected in the round (the cohort size).
    """
    lost = len(failed) + len(late)
    if lost == 0:
        return None
    parts = _failed_parts(failed)
    if late:
        parts.append(_late_part(late))
    text = f"{lost} of {expected} client updates not used: " + "; ".join(parts)
    if any(failure_kind(reason) == NON_FINITE for _, reason in failed):
        text += f" (hint: {NON_FINITE_HINT})"
    return text
