"""The deployment runtime: an asyncio gRPC center and client agents.

The only package that imports ``grpc``. The round logic is the simulator's
(:class:`~fedstrata.coordinator.RoundCoordinator`); this package only moves bytes and
time. See ``docs/runtime.md``.
"""

from fedstrata.runtime.aggregator import TierAggregator
from fedstrata.runtime.build import Deployment
from fedstrata.runtime.center import (
    Center,
    CenterSettings,
    RoundRecord,
    RuntimeResult,
    TaskKind,
    TaskSpec,
    UploadHeader,
    decode_partial,
    encode_partial,
)
from fedstrata.runtime.client import ClientAgent
from fedstrata.runtime.client_link import Backoff, CenterLink, ClientReport, decode_model
from fedstrata.runtime.guard import ServerLimits
from fedstrata.runtime.link import GrpcLink
from fedstrata.runtime.loader import deployment
from fedstrata.runtime.parent_link import ParentLink, TierReport
from fedstrata.runtime.security import (
    DevPki,
    TlsFiles,
    TokenTable,
    client_common_name,
    make_dev_pki,
    new_token,
)
from fedstrata.runtime.support import check_supported
from fedstrata.runtime.transport import ChunkPlan, Reassembler, iter_chunks
from fedstrata.runtime.wire import CenterServer, WireCounter

__all__ = [
    "Backoff",
    "Center",
    "CenterLink",
    "CenterServer",
    "CenterSettings",
    "ChunkPlan",
    "ClientAgent",
    "ClientReport",
    "Deployment",
    "DevPki",
    "GrpcLink",
    "ParentLink",
    "Reassembler",
    "RoundRecord",
    "RuntimeResult",
    "ServerLimits",
    "TaskKind",
    "TaskSpec",
    "TierAggregator",
    "TierReport",
    "TlsFiles",
    "TokenTable",
    "UploadHeader",
    "WireCounter",
    "check_supported",
    "client_common_name",
    "decode_model",
    "decode_partial",
    "deployment",
    "encode_partial",
    "iter_chunks",
    "make_dev_pki",
    "new_token",
]
