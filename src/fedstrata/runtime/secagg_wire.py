"""Secure-aggregation messages on the wire: the protocol's dataclasses
(:mod:`fedstrata.secagg.messages`) to and from the ``SecAgg*`` protobuf messages.

A step travels as one ``Submit`` stream (``StreamHeader.secagg_phase``, the message
as data, chunked like any upload); the center's answer comes back in
``SubmitReply.secagg_message``. Masked inputs are packed at the ring's width
(:mod:`fedstrata.secagg.bitpack`). Every decoder refuses bytes that are not the
expected message with a :class:`~fedstrata.errors.PayloadError` naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from fedstrata.errors import PayloadError, ProtocolError
from fedstrata.runtime.proto import fedstrata_pb2 as pb
from fedstrata.secagg.bitpack import pack_bits, unpack_bits
from fedstrata.secagg.config import SecAggConfig
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
from fedstrata.secagg.twotier import ClusterReport

__all__ = [
    "Phase",
    "SetupReply",
    "decode_bundle",
    "decode_cluster",
    "decode_directory",
    "decode_keys",
    "decode_masked",
    "decode_request",
    "decode_response",
    "decode_setup",
    "decode_shares",
    "encode_bundle",
    "encode_cluster",
    "encode_directory",
    "encode_keys",
    "encode_masked",
    "encode_request",
    "encode_response",
    "encode_setup",
    "encode_shares",
]


class Phase(IntEnum):
    """The step a ``Submit`` carries (``StreamHeader.secagg_phase``)."""

    NONE = pb.SECAGG_NONE
    SETUP = pb.SECAGG_SETUP
    KEYS = pb.SECAGG_KEYS
    SHARES = pb.SECAGG_SHARES
    INPUT = pb.SECAGG_INPUT
    UNMASK = pb.SECAGG_UNMASK
    CLUSTER = pb.SECAGG_CLUSTER


def _parse(cls: Any, data: bytes, what: str) -> Any:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise PayloadError(f"{what}: not a valid {cls.__name__} message: {exc}") from None
    return msg


def _paired(keys: Any, values: Any, what: str) -> dict[int, bytes]:
    if len(keys) != len(values) or len(set(keys)) != len(keys):
        raise PayloadError(f"{what}: {len(keys)} ids for {len(values)} entries (or repeated ids)")
    return {int(k): bytes(v) for k, v in zip(keys, values, strict=True)}


@dataclass(frozen=True)
class SetupReply:
    """The center's answer to ``SETUP``: the round and its graph seed, the client's
    party id, the protocol's public parameters and (two-tier) the center's public key
    for sealing."""

    setup: RoundSetup
    party_id: int
    parties: int
    degree: int
    threshold: int
    center_public: bytes = b""

    def config(self, vector_length: int, modulus_bits: int) -> SecAggConfig:
        """The round's protocol parameters for a client's vector.

        Raises:
            ProtocolError: a threshold that would let the server rebuild both secrets of
                a client (at most half the degree), or an out-of-range party.
        """
        if not self.degree / 2 < self.threshold <= self.degree:
            raise ProtocolError(
                f"the center's threshold {self.threshold} is unsafe for degree {self.degree}"
            )
        if not 0 <= self.party_id < self.parties:
            raise ProtocolError(f"party id {self.party_id} outside [0, {self.parties})")
        return SecAggConfig(self.parties, vector_length, self.threshold, self.degree, modulus_bits)


def encode_setup(reply: SetupReply) -> bytes:
    s = reply.setup
    msg = pb.SecAggSetup(
        round_id=s.round_id,
        graph_seed=s.graph_seed,
        party_id=reply.party_id,
        center_public=reply.center_public,
        parties=reply.parties,
        degree=reply.degree,
        threshold=reply.threshold,
    )
    return bytes(msg.SerializeToString())


def decode_setup(data: bytes) -> SetupReply:
    m = _parse(pb.SecAggSetup, data, "SecAgg setup")
    return SetupReply(
        RoundSetup(m.round_id, m.graph_seed), m.party_id, m.parties, m.degree, m.threshold,
        bytes(m.center_public),
    )  # fmt: skip


def encode_keys(msg: AdvertiseKeys) -> bytes:
    out = pb.SecAggKeys(
        client_id=msg.client_id, enc_public=msg.enc_public, mask_public=msg.mask_public
    )
    return bytes(out.SerializeToString())


def decode_keys(data: bytes) -> AdvertiseKeys:
    m = _parse(pb.SecAggKeys, data, "SecAgg keys")
    return AdvertiseKeys(m.client_id, bytes(m.enc_public), bytes(m.mask_public))


def encode_directory(msg: KeyDirectory) -> bytes:
    """The neighbours' ids and their keys concatenated (one length per kind of key).

    Raises:
        PayloadError: keys of one kind differ in length.
    """
    ids = sorted(msg.keys)
    enc = [msg.keys[v][0] for v in ids]
    mask = [msg.keys[v][1] for v in ids]
    if len({len(k) for k in enc}) > 1 or len({len(k) for k in mask}) > 1:
        raise PayloadError("SecAgg key directory: keys of one kind differ in length")
    out = pb.SecAggKeyDirectory(
        round_id=msg.round_id, client_ids=ids, enc_publics=b"".join(enc),
        mask_publics=b"".join(mask),
    )  # fmt: skip
    return bytes(out.SerializeToString())


def decode_directory(data: bytes) -> KeyDirectory:
    m = _parse(pb.SecAggKeyDirectory, data, "SecAgg key directory")
    n = len(m.client_ids)
    enc, mask = _split(bytes(m.enc_publics), n), _split(bytes(m.mask_publics), n)
    keys = {int(v): (e, k) for v, e, k in zip(m.client_ids, enc, mask, strict=True)}
    if len(keys) != n:
        raise PayloadError("SecAgg key directory: repeated client ids")
    return KeyDirectory(m.round_id, keys)


def _split(blob: bytes, n: int) -> list[bytes]:
    """``n`` equal keys concatenated in ``blob``.

    Raises:
        PayloadError: ``blob`` is not ``n`` keys of one length.
    """
    if n == 0:
        if blob:
            raise PayloadError("SecAgg key directory: keys without client ids")
        return []
    size, rest = divmod(len(blob), n)
    if rest or size == 0:
        raise PayloadError(f"SecAgg key directory: {len(blob)} key bytes for {n} clients")
    return [blob[i * size : (i + 1) * size] for i in range(n)]


def encode_shares(msg: ShareKeys) -> bytes:
    ids = sorted(msg.ciphertexts)
    out = pb.SecAggShareKeys(
        client_id=msg.client_id, recipients=ids, ciphertexts=[msg.ciphertexts[v] for v in ids]
    )
    return bytes(out.SerializeToString())


def decode_shares(data: bytes) -> ShareKeys:
    m = _parse(pb.SecAggShareKeys, data, "SecAgg share keys")
    return ShareKeys(m.client_id, _paired(m.recipients, m.ciphertexts, "SecAgg share keys"))


def encode_bundle(msg: ShareBundle) -> bytes:
    ids = sorted(msg.ciphertexts)
    out = pb.SecAggShareBundle(
        round_id=msg.round_id, senders=ids, ciphertexts=[msg.ciphertexts[v] for v in ids]
    )
    return bytes(out.SerializeToString())


def decode_bundle(data: bytes) -> ShareBundle:
    m = _parse(pb.SecAggShareBundle, data, "SecAgg share bundle")
    return ShareBundle(m.round_id, _paired(m.senders, m.ciphertexts, "SecAgg share bundle"))


def encode_masked(msg: MaskedInput) -> bytes:
    out = pb.SecAggMaskedInput(
        client_id=msg.client_id,
        round_id=msg.round_id,
        length=int(msg.vector.shape[0]),
        modulus_bits=msg.modulus_bits,
        packed=pack_bits(msg.vector, msg.modulus_bits),
    )
    return bytes(out.SerializeToString())


def decode_masked(data: bytes, length: int, modulus_bits: int) -> MaskedInput:
    """A masked input of ``length`` elements at ``modulus_bits`` (what the round expects).

    Raises:
        PayloadError: not a masked input of that length and width, or badly packed.
    """
    m = _parse(pb.SecAggMaskedInput, data, "SecAgg masked input")
    if (m.length, m.modulus_bits) != (length, modulus_bits):
        raise PayloadError(
            f"SecAgg masked input of {m.length} elements at {m.modulus_bits} bits; the "
            f"round expects {length} at {modulus_bits}"
        )
    vector = unpack_bits(bytes(m.packed), length, modulus_bits).astype(np.uint32)
    return MaskedInput(m.client_id, m.round_id, vector, modulus_bits)


def encode_request(msg: UnmaskRequest) -> bytes:
    out = pb.SecAggUnmaskRequest(
        round_id=msg.round_id, survivors=sorted(msg.survivors), dropped=sorted(msg.dropped)
    )
    return bytes(out.SerializeToString())


def decode_request(data: bytes) -> UnmaskRequest:
    m = _parse(pb.SecAggUnmaskRequest, data, "SecAgg unmask request")
    return UnmaskRequest(m.round_id, frozenset(m.survivors), frozenset(m.dropped))


def encode_response(msg: UnmaskResponse) -> bytes:
    seeds, keys = sorted(msg.self_mask_shares), sorted(msg.key_shares)
    out = pb.SecAggUnmaskResponse(
        client_id=msg.client_id,
        seed_owners=seeds,
        seed_shares=[msg.self_mask_shares[v] for v in seeds],
        key_owners=keys,
        key_shares=[msg.key_shares[v] for v in keys],
    )
    if msg.sealed is not None:
        out.sealed.CopyFrom(_sealed_pb(msg.sealed))
    return bytes(out.SerializeToString())


def decode_response(data: bytes) -> UnmaskResponse:
    m = _parse(pb.SecAggUnmaskResponse, data, "SecAgg unmask response")
    sealed = None
    if m.HasField("sealed"):
        s = m.sealed
        sealed = SealedShares(s.client_id, bytes(s.ephemeral_public), bytes(s.ciphertext))
    return UnmaskResponse(
        m.client_id,
        _paired(m.seed_owners, m.seed_shares, "SecAgg unmask response"),
        _paired(m.key_owners, m.key_shares, "SecAgg unmask response"),
        sealed,
    )


def _sealed_pb(s: SealedShares) -> pb.SecAggSealed:
    return pb.SecAggSealed(
        client_id=s.client_id, ephemeral_public=s.ephemeral_public, ciphertext=s.ciphertext
    )


def encode_cluster(report: ClusterReport, clients: Sequence[int] = ()) -> bytes:
    """A cluster report, with its survivors' client ids (``clients``)."""
    g = report.graph
    msg = pb.SecAggClusterReport(
        threshold=report.threshold,
        round_id=report.round_id,
        survivors=sorted(report.survivors),
        sealed=[_sealed_pb(s) for s in report.sealed],
        graph_size=g.num_clients,
        graph_degree=g.degree,
        graph_seed=g.seed,
        clients=list(clients),
    )
    return bytes(msg.SerializeToString())


def cluster_clients(data: bytes) -> tuple[int, ...]:
    """The survivors' client ids a cluster report names (an edge's accepted clients).

    Raises:
        PayloadError: not a cluster report.
    """
    return tuple(int(c) for c in _parse(pb.SecAggClusterReport, data, "cluster report").clients)


def decode_cluster(data: bytes) -> ClusterReport:
    """Raises: PayloadError: not a cluster report, or an impossible graph."""
    m = _parse(pb.SecAggClusterReport, data, "SecAgg cluster report")
    if not 0 < m.graph_degree < max(2, m.graph_size) or any(
        v >= m.graph_size for v in m.survivors
    ):
        raise PayloadError(
            f"SecAgg cluster report: graph of {m.graph_size} with degree {m.graph_degree} "
            "does not hold its survivors"
        )
    sealed = tuple(
        SealedShares(s.client_id, bytes(s.ephemeral_public), bytes(s.ciphertext)) for s in m.sealed
    )
    graph = NeighbourGraph(m.graph_size, m.graph_degree, m.graph_seed)
    return ClusterReport(m.threshold, m.round_id, frozenset(m.survivors), sealed, graph)
