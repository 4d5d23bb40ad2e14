"""Communication compression: sparsify, quantize, code indices, zstd, with error feedback.

Uplink: :class:`ChainCodec` (a :class:`fedstrata.pipeline.Codec`) configured by a
:class:`CompressionSpec` or one of :data:`PRESETS`. Downlink: :class:`DownlinkEncoder`
(server) and :func:`apply_downlink` (client). See ``docs/compression.md``.
"""

from fedstrata.compress.chain import ChainCodec, Encoded, encode_vector
from fedstrata.compress.downlink import DownlinkEncoder, DownlinkMessage, apply_downlink
from fedstrata.compress.sparsify import randk_support
from fedstrata.compress.spec import PRESETS, CompressionSpec, resolve_spec

__all__ = [
    "PRESETS",
    "ChainCodec",
    "CompressionSpec",
    "DownlinkEncoder",
    "DownlinkMessage",
    "Encoded",
    "apply_downlink",
    "encode_vector",
    "randk_support",
    "resolve_spec",
]
