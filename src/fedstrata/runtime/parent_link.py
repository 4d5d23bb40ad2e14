"""An aggregator tier's contract with its parent (no gRPC here).

:class:`ParentLink` is what a :class:`~fedstrata.runtime.aggregator.TierAggregator`
needs from its connection to its parent (:class:`~fedstrata.runtime.link.GrpcLink` and
:class:`~fedstrata.runtime.relink.FailoverLink` have it), and :func:`session_of` opens
a session passing only the arguments that are set. :data:`Reconnect` is the hook a tier
calls when that connection breaks, and :class:`TierReport` what the tier did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fedstrata.core.payload import Payload
from fedstrata.errors import TransportError
from fedstrata.runtime.downlink import DownlinkAsk
from fedstrata.runtime.records import RoundRecord, TaskSpec

if TYPE_CHECKING:
    from fedstrata.runtime.sched_reports import DeviceReport
    from fedstrata.runtime.tier_work import MemberReport

__all__ = ["ParentLink", "Reconnect", "TierReport", "session_of"]


Reconnect = Callable[[TransportError], Awaitable[bool]]
"""Called when the parent connection broke: reconnect (after a backoff) and return
True to register again, or False to give up (the error is then raised)."""


class ParentLink(Protocol):
    """What a tier needs from its connection to its parent (``GrpcLink`` has it)."""

    def session(
        self, live_clients: int = 0, *, node: str = "",
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> AsyncIterator[TaskSpec]:  # fmt: skip
        """``node``: an explicit tree's tier names its node in its hello (the parent
        refuses a second tier claiming it); ``profiles``: a scheduled tree's edge
        forwards its clients' devices."""
        ...

    async def download(self, round_idx: int) -> Payload: ...

    async def download_downlink(self, round_idx: int, ask: DownlinkAsk) -> bytes: ...

    async def submit_partial(
        self, round_idx: int, data: bytes, live_clients: int = 0, *,
        reports: Sequence[MemberReport] = (),
        profiles: Mapping[int, DeviceReport] | None = None,
    ) -> tuple[bool, str]: ...  # fmt: skip

    async def report_live(self, live_clients: int) -> None: ...

    async def download_eval(self, round_idx: int) -> Payload: ...  # federated evaluation

    async def submit_eval(self, round_idx: int, report: bytes) -> tuple[bool, str]: ...


@dataclass
class TierReport:
    """What a tier did: its rounds' records and the parent's refusals."""

    rounds: list[RoundRecord] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def session_of(
    link: Any, live_clients: int, profile: DeviceReport | None = None, node: str = "",
    profiles: Mapping[int, DeviceReport] | None = None,
) -> AsyncIterator[TaskSpec]:  # fmt: skip
    """``link.session(...)`` passing only the arguments that are set: a client's device
    ``profile``, a tier's ``node`` of the tree and the ``profiles`` a scheduled tree's
    edge forwards. A link of an older contract (a client's, a test's stand-in) takes
    none of them, and a call that sets none asks nothing more of it."""
    extra: dict[str, Any] = {}
    if profile is not None:
        extra["profile"] = profile
    if node:
        extra["node"] = node
    if profiles is not None:
        extra["profiles"] = profiles
    tasks: AsyncIterator[TaskSpec] = link.session(live_clients=live_clients, **extra)
    return tasks
