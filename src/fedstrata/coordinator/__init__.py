"""Round logic as a sans-IO state machine, shared by the simulator and the runtime
(synchronous rounds, or FedBuff's buffered policy)."""

from fedstrata.coordinator.buffered import Buffering
from fedstrata.coordinator.events import (
    Accept,
    ClientFailed,
    CloseRound,
    Command,
    DeadlinePassed,
    Event,
    Reject,
    RoundOutcome,
    SendModel,
    StartRound,
    UpdateArrived,
)
from fedstrata.coordinator.machine import RoundCoordinator, RoundPolicy, Selector
from fedstrata.coordinator.topology import Topology, TopologyNode

__all__ = [
    "Accept",
    "Buffering",
    "ClientFailed",
    "CloseRound",
    "Command",
    "DeadlinePassed",
    "Event",
    "Reject",
    "RoundCoordinator",
    "RoundOutcome",
    "RoundPolicy",
    "Selector",
    "SendModel",
    "StartRound",
    "Topology",
    "TopologyNode",
    "UpdateArrived",
]
