"""Secure aggregation: masked sums that reveal only the aggregate.

Implements the protocol of Bonawitz et al. (CCS 2017) with the sparse neighbour
graph of SecAgg+ (Bell et al., CCS 2020), two-tier masking for device -> edge ->
center trees (:class:`TreeSecAgg` drives it one event at a time for a tree
driver), a mask pool that moves key agreement and mask expansion off the
round's critical path, and late-device rejection. The client and server are state
machines without I/O; :func:`simulate_round` drives them in-process.
:class:`RingCodec` (client) and :class:`SecAggAggregator` (center) run the protocol
inside the simulator. See ``docs/secagg.md``.
"""

from fedstrata.secagg.aggregator import (
    RingState,
    SecAggAggregator,
    SecAggOptions,
    SecAggReport,
    ring_sum,
    secagg_components,
)
from fedstrata.secagg.client import ClientPhase, ClientProtocol
from fedstrata.secagg.codec import (
    NoiseFn,
    RingCodec,
    RingMessage,
    RingSpec,
    SupportFn,
    dequantize,
    fit_modulus,
    lift,
    quantize_to_ring,
)
from fedstrata.secagg.config import (
    GraphParameters,
    SecAggConfig,
    check_ring_capacity,
    derive_parameters,
)
from fedstrata.secagg.graph import NeighbourGraph
from fedstrata.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    RoundSetup,
    SealedShares,
    ShareBundle,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedstrata.secagg.pool import MaskPool
from fedstrata.secagg.prg import Entropy, MaskExpander
from fedstrata.secagg.ring import add_noise, from_ring, to_ring
from fedstrata.secagg.server import ServerPhase, ServerProtocol
from fedstrata.secagg.shamir import ShamirScheme
from fedstrata.secagg.simulate import (
    RoundStats,
    SimulationResult,
    drive_round,
    simulate_round,
    simulate_round_detailed,
)
from fedstrata.secagg.tree import (
    EdgeOutcome,
    TreeAggregate,
    TreeRound,
    TreeSecAgg,
    TreeSecAggOptions,
)
from fedstrata.secagg.tree_cost import PartyCost, TreeSecAggCost
from fedstrata.secagg.twotier import (
    ClusterReport,
    TwoTierResult,
    TwoTierSecAgg,
    remove_cluster_masks,
)

__all__ = [
    "AdvertiseKeys",
    "ClientPhase",
    "ClientProtocol",
    "ClusterReport",
    "EdgeOutcome",
    "Entropy",
    "GraphParameters",
    "KeyDirectory",
    "MaskExpander",
    "MaskPool",
    "MaskedInput",
    "NeighbourGraph",
    "NoiseFn",
    "PartyCost",
    "RingCodec",
    "RingMessage",
    "RingSpec",
    "RingState",
    "RoundSetup",
    "RoundStats",
    "SealedShares",
    "SecAggAggregator",
    "SecAggConfig",
    "SecAggOptions",
    "SecAggReport",
    "ServerPhase",
    "ServerProtocol",
    "ShamirScheme",
    "ShareBundle",
    "ShareKeys",
    "SimulationResult",
    "SupportFn",
    "TreeAggregate",
    "TreeRound",
    "TreeSecAgg",
    "TreeSecAggCost",
    "TreeSecAggOptions",
    "TwoTierResult",
    "TwoTierSecAgg",
    "UnmaskRequest",
    "UnmaskResponse",
    "add_noise",
    "check_ring_capacity",
    "dequantize",
    "derive_parameters",
    "drive_round",
    "fit_modulus",
    "from_ring",
    "lift",
    "quantize_to_ring",
    "remove_cluster_masks",
    "ring_sum",
    "secagg_components",
    "simulate_round",
    "simulate_round_detailed",
    "to_ring",
]
