"""The deployment runtime: an asyncio gRPC center and client agents.

The only package that imports ``grpc``. The round logic is the simulator's
(:class:`~fedstrata.coordinator.RoundCoordinator`); this package only moves bytes and
time. See ``docs/runtime.md``.
"""

from fedstrata.runtime.build import Deployment, check_supported, deployment
from fedstrata.runtime.center import (
    Center,
    CenterSettings,
    RoundRecord,
    RuntimeResult,
    TaskKind,
    TaskSpec,
    UploadHeader,
)
from fedstrata.runtime.client import CenterLink, ClientAgent, ClientReport, decode_model
from fedstrata.runtime.security import (
    DevPki,
    TlsFiles,
    TokenTable,
    client_common_name,
    make_dev_pki,
    new_token,
)
from fedstrata.runtime.transport import ChunkPlan, Reassembler, iter_chunks
from fedstrata.runtime.wire import CenterServer, GrpcLink

__all__ = [
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
    "Reassembler",
    "RoundRecord",
    "RuntimeResult",
    "TaskKind",
    "TaskSpec",
    "TlsFiles",
    "TokenTable",
    "UploadHeader",
    "check_supported",
    "client_common_name",
    "decode_model",
    "deployment",
    "iter_chunks",
    "make_dev_pki",
    "new_token",
]
