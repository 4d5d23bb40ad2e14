"""What aggregator tiers add to a round's rules, shared by the center and its edges.

* **The round over the tiers' clients.** The simulator closes a tree round over the
  cohort's clients: a client is accepted when it was accepted in every edge round of
  the global round (its worst fate counts), the round is applied when at least
  ``rounds.min_clients`` were, and central DP scales its noise by the accepted clients
  (:mod:`fedstrata.sim.hierarchy`). A tier reports its accepted clients with its
  partial (:func:`accepted_clients` over its rounds' records; a region expands its
  edges' reports; under secure aggregation an edge names its survivors in its cluster
  report), and the center closes the same outcome over them
  (:class:`TierClients`): its record's ``clients``, which the server step and the DP
  accountant use, while ``outcome`` stays the round over the tiers.
* **Secure aggregation with sampling.** An edge whose share of the cohort is fewer
  than two clients cannot hide a client in its cluster's sum: as in the simulator
  (:mod:`fedstrata.sim.tree_secagg`, "sits out") its client does not train
  (:func:`lone_share`) and the edge takes part in the center's outer round with an
  empty cluster (``EdgeSecure.sit_out``: a zero input, no survivors), so no outer
  party drops; edges with two or more run the secure sum over their selected clients
  only.
* **One tier per node.** A tier of an explicit tree names its node (edge or region)
  in its hello; :class:`NodeClaims` refuses a second live tier claiming it.
* **Legacy tiers** (aggregator tiers without a ``topology`` section): every connected
  client of a tier trains in every round its parent runs; nothing draws a cohort over
  the whole federation, so ``rounds.clients_per_round`` would be accepted and ignored.
  :func:`check_tier_combos` refuses it, naming the setting and the way to sampling
  below the tiers (a ``topology`` section, whose cohort is drawn once for the tree as
  the simulator draws it, :mod:`fedstrata.runtime.tier_periods`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedstrata.config import FedConfig
from fedstrata.coordinator import RoundOutcome
from fedstrata.errors import ConfigError, NodeClaimedError

if TYPE_CHECKING:
    from fedstrata.coordinator.topology import TopologyNode
    from fedstrata.runtime.records import RoundRecord

__all__ = ["NodeClaims", "TierClients", "accepted_clients", "check_tier_combos", "lone_share"]

log = logging.getLogger(__name__)


def lone_share(members: Sequence[int] | None, node: TopologyNode | None, r: int) -> str | None:
    """Why an edge with ``members`` selected sits out round ``r``'s secure sum (None:
    it runs it; ``members`` None: no tree, every connected client)."""
    if members is None or len(members) >= 2:
        return None
    name = "?" if node is None else node.name
    who = f"client {members[0]} is alone" if members else "no client is selected"
    return (
        f"round {r}: {who} among the selected clients of edge {name!r}; secure "
        "aggregation needs >= 2 per cluster, so it sits out the round (as in the simulator)"
    )


def round_clients(record: RoundRecord) -> set[int]:
    """The clients accepted in one round of a center: its accepted participants that
    are clients, and the accepted clients each accepted tier reported."""
    out: set[int] = set()
    for p in record.outcome.accepted:
        out.update(record.tier_clients.get(p, (p,)))
    return out


def accepted_clients(records: Sequence[RoundRecord]) -> tuple[int, ...]:
    """The clients accepted in every one of ``records`` (a node's periods in one round
    of its parent: the simulator's worst fate), sorted."""
    if not records:
        return ()
    common = round_clients(records[0])
    for record in records[1:]:
        common &= round_clients(record)
    return tuple(sorted(common))


@dataclass(frozen=True)
class TierClients:
    """The center's round over its tiers' clients (see the module docstring).

    Attributes:
        min_clients: fewest accepted clients for the round to update the model.
    """

    min_clients: int = 1

    def close(self, record: RoundRecord) -> RoundRecord:
        """``record`` with ``clients``: the round's outcome over the tiers' clients."""
        clients = accepted_clients([record])
        tiers = record.outcome
        applied = tiers.applied and len(clients) >= self.min_clients
        if tiers.applied and not applied:
            log.warning(
                "round %d: only %d client updates through the tiers (< min_clients %d); "
                "aggregate unused", tiers.round_idx, len(clients), self.min_clients,
            )  # fmt: skip
        outcome = RoundOutcome(
            tiers.round_idx, len(clients), clients, (), (), tiers.end_s, applied
        )
        return dataclasses.replace(record, clients=outcome)


def check_tier_combos(config: FedConfig, num_clients: int) -> None:
    """Refuse what aggregator tiers would ignore (``num_clients``: the federation's).

    Raises:
        ConfigError: ``rounds.clients_per_round`` below ``num_clients`` without a
            ``topology`` section.
    """
    r = config.rounds
    per_round = r.clients_per_round
    if config.topology.mode != "flat" or per_round is None or per_round >= num_clients:
        return
    raise ConfigError(
        f"rounds.clients_per_round={per_round} of {num_clients} clients with aggregator "
        "tiers and no topology section: each tier trains every client connected to it, so no "
        "cohort is drawn over the federation; write the tree as topology.mode: explicit "
        "with topology.edges (edge -> client ids), whose cohort is drawn once for the "
        "whole tree as in the simulator, or set rounds.clients_per_round: null "
        '(docs/runtime.md, "Tiers")'
    )


@dataclass
class NodeClaims:
    """Which live aggregator tier serves each node of the tree (its hello names it):
    a second tier claiming a node another one serves is refused, so two aggregators
    never train one edge's clients in the same run."""

    held: dict[str, int] = field(default_factory=dict)

    def claim(self, node: str, participant: int) -> None:
        """``participant`` serves ``node`` ("": a client or an unnamed tier: nothing).

        Raises:
            NodeClaimedError: another participant holds a session for ``node``.
        """
        if not node:
            return
        owner = self.held.get(node)
        if owner is not None and owner != participant:
            raise NodeClaimedError(
                f"participant {participant} claims node {node!r}, which aggregator tier "
                f"{owner} serves: each edge or region of the topology is served by one "
                "aggregator (check --node and the clients connected to each aggregator)"
            )
        self.held[node] = participant

    def release(self, node: str, participant: int) -> None:
        """``participant``'s session ended: ``node`` is free."""
        if node and self.held.get(node) == participant:
            del self.held[node]
