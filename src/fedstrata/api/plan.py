"""``fedstrata plan``: show the tree a config builds and what a round should cost.

The predictions use the simulator's own timing model (:mod:`fedstrata.core.timing`),
so ``fedstrata plan`` and ``fedstrata run`` agree: a flat round is timed per client by
:meth:`~fedstrata.sim.ProfileTable.legs_s` and ends at the cohort's latest arrival
(its expectation over the random cohort: :func:`fedstrata.coordinator.round_time.
expected_round_s`; with every client selected, the simulator's round to the bit); a
tree round by :func:`~fedstrata.api.hierarchy.predicted_tree_round_s` (the closed
forms of the tree simulator's fair sharing, exact where no sender's link binds and a
node's hop latencies are equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstrata.api.components import (
    local_plan,
    population,
    profiles,
    resolve_task,
    sampling_rate,
    trainer_factory,
)
from fedstrata.api.hierarchy import plan_tree, predicted_tree_round_s
from fedstrata.config import FedConfig
from fedstrata.coordinator.round_time import expected_round_s
from fedstrata.coordinator.topology import TopologyNode
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.core.training import Trainer
from fedstrata.sim import ProfileTable
from fedstrata.sim.registry_bridge import with_registered

__all__ = [
    "RoundPrediction",
    "describe_plan",
    "predict",
    "predicted_flat_round_s",
    "run_profiles",
    "unmodelled",
]


@dataclass(frozen=True)
class RoundPrediction:
    """Predicted simulated seconds of one global round.

    Attributes:
        flat_s: under ``topology.mode: flat`` (the flat simulator's round).
        tree_s: under this config's tree; ``None`` when the config is flat.
        num_clients: the population.
        num_params: the model's parameters.
    """

    flat_s: float
    tree_s: float | None
    num_clients: int
    num_params: int


def _cohort(config: FedConfig, n: int, table: ProfileTable) -> tuple[int | None, float | None]:
    """(uniform cohort size, Poisson rate) of a flat round; one of them is None."""
    online = float(table.availability.mean())
    if config.privacy.enabled:
        return None, sampling_rate(config, n) * online
    k = config.rounds.clients_per_round or n
    return max(1, min(k, round(online * n))), None


def predicted_flat_round_s(
    config: FedConfig, trainer: Trainer, sizes: np.ndarray, table: ProfileTable
) -> float:
    """Expected simulated seconds of a flat round of ``config`` (dense model and update).

    Availability below 1 shrinks a full cohort to the expected number of online
    clients (Poisson rates are scaled by it); selection by a scheduler (Oort,
    allocation) is approximated by a uniform cohort capped at the deadline.
    """
    n = len(sizes)
    plan = local_plan(config.client)
    examples = np.array([plan.num_samples(int(s)) for s in sizes], dtype=np.int64)
    dense = HEADER_SIZE + 4 * trainer.spec.size
    down, compute, up = table.legs_s(
        np.arange(n), examples, trainer.flops_per_example, dense, dense
    )
    cohort, rate = _cohort(config, n, table)
    return expected_round_s(
        down + compute + up, cohort=cohort, poisson_rate=rate,
        deadline_s=config.rounds.deadline_s,
    )  # fmt: skip


def run_profiles(config: FedConfig, n: int) -> ProfileTable:
    """The profiles ``fedstrata run`` would use: generated, or registered where the
    registry of ``scheduling.registry_url`` holds a device (read only)."""
    table = profiles(config, n)
    url = config.scheduling.registry_url
    if url is None:
        return table
    from fedstrata.scheduling import Registry  # deferred: SQLAlchemy, Alembic

    with Registry.open(url) as registry:
        return with_registered(table, registry.registered(np.arange(n)))


def predict(config: FedConfig) -> RoundPrediction:
    """Predicted round times of ``config`` (builds its data, model and profiles).

    Raises:
        FedstrataError: invalid data or configuration, or an unreadable registry.
    """
    task = resolve_task(config)  # the config's task, or None: the built-in model
    dataset = population(config, task)
    trainer = trainer_factory(config, dataset, task)()
    table = run_profiles(config, dataset.num_clients)
    sizes = dataset.client_sizes()
    flat_s = predicted_flat_round_s(config, trainer, sizes, table)
    tree_s = None
    if config.topology.mode != "flat":
        tree = plan_tree(config, dataset.num_clients)
        tree_s = predicted_tree_round_s(config, tree, trainer, sizes, table)
    return RoundPrediction(flat_s, tree_s, dataset.num_clients, trainer.spec.size)


def _lines(node: TopologyNode, depth: int = 0) -> list[str]:
    clients = len(list(node.all_clients()))
    own = f", {len(node.clients)} direct clients" if node.clients and node.children else ""
    out = [f"{'  ' * depth}{node.tier.value} {node.name}: {clients} clients{own}"]
    if node.children and all(not c.children for c in node.children) and len(node.children) > 8:
        sizes = sorted(len(c.clients) for c in node.children)
        out.append(f"{'  ' * (depth + 1)}{len(node.children)} edges of {sizes[0]}-{sizes[-1]}")
        return out
    for child in node.children:
        out += _lines(child, depth + 1)
    return out


def _cohort_line(config: FedConfig, n: int) -> str:
    r = config.rounds
    if config.privacy.enabled:
        who = f"Poisson sampling at q = {sampling_rate(config, n):.3g}"
    else:
        who = f"{r.clients_per_round or n} of {n} clients"
    deadline = "none" if r.deadline_s is None else f"{r.deadline_s:g} s"
    return f"cohort: {who} per round, deadline {deadline}"


def unmodelled(config: FedConfig) -> tuple[str, ...]:
    """Enabled settings the prediction does not model: it sends dense float32 both
    ways and charges no protocol time, so with these on the simulated round is faster
    (compression) or slower (secure aggregation) than predicted."""
    out = []
    if config.compression.enabled:
        out.append("compression")
    if config.downlink.enabled:
        out.append("downlink")
    if config.secagg.enabled:
        out.append("secagg")
    return tuple(out)


def describe_plan(config: FedConfig) -> str:
    """The tree, and the predicted simulated seconds of one global round."""
    pred = predict(config)
    t = config.topology
    tree = plan_tree(config, pred.num_clients)
    lines = [f"topology: {t.mode} (depth {tree.topology.depth})", *_lines(tree.topology.root)]
    lines += ["", f"model: {pred.num_params:,} parameters", _cohort_line(config, pred.num_clients)]
    lines.append(f"predicted global round, flat: {pred.flat_s:10.2f} s (simulated time)")
    if pred.tree_s is not None:
        lines += [
            f"links: LAN {t.lan_mbps:g} Mb/s, metro {t.metro_mbps:g} Mb/s, "
            f"WAN {t.wan_mbps:g} Mb/s; the cohort trains in every edge round",
            f"predicted global round, {t.mode}: {pred.tree_s:10.2f} s"
            f"  (kappa_edge {t.kappa_edge}, kappa_region {t.kappa_region})",
        ]
    missing = unmodelled(config)
    if missing:
        lines.append(
            f"not modelled: {', '.join(missing)} (the prediction sends dense float32 both "
            "ways and charges no protocol time; `fedstrata run` simulates them)"
        )
    return "\n".join(lines)
