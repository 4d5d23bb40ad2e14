"""In-process driver: runs every client's and the server's state machine for one round.

This is what the simulator and the benchmark use. It moves messages between the
state machines in memory, times each party's computation separately (so a round
can be charged to virtual clocks), and counts each client's bytes with the
messages' ``nbytes``. The offline phase (setup, keys, shares and, with the mask
pool, mask expansion) can run before the inputs exist; the online phase is masked
input plus unmasking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from fedstrata.errors import ConfigError, ProtocolError
from fedstrata.secagg.client import ClientProtocol
from fedstrata.secagg.config import SecAggConfig
from fedstrata.secagg.messages import MaskedInput, UnmaskRequest
from fedstrata.secagg.prg import Entropy, MaskExpander, PairSecrets, U32Vector
from fedstrata.secagg.server import ServerProtocol
from fedstrata.secagg.shamir import ShamirScheme

__all__ = [
    "PartyMeter",
    "RoundStats",
    "SimulationResult",
    "drive_offline",
    "drive_round",
    "drive_unmask",
    "simulate_round",
    "simulate_round_detailed",
]

_T = TypeVar("_T")


@dataclass(frozen=True, eq=False)
class RoundStats:
    """Per-party compute seconds and bytes of one simulated round.

    Attributes:
        client_offline_s: per client, seconds in steps 0-2 (incl. mask pool).
        client_online_s: per client, seconds in masked input and unmasking.
        server_offline_s: server seconds in steps 0-2.
        server_online_s: server seconds in steps 3-4 (summing and recovery).
        bytes_up: per client, bytes sent to the server.
        bytes_down: per client, bytes received from the server.
        late_rejected: late masked inputs the server rejected.
        client_input_s: per client, the part of ``client_online_s`` spent masking
            its input (the rest is unmasking).
        server_input_s: the part of ``server_online_s`` spent summing masked inputs.
    """

    client_offline_s: NDArray[np.float64]
    client_online_s: NDArray[np.float64]
    server_offline_s: float
    server_online_s: float
    bytes_up: NDArray[np.int64]
    bytes_down: NDArray[np.int64]
    late_rejected: int
    client_input_s: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    server_input_s: float = 0.0

    @property
    def total_s(self) -> float:
        """All parties' computation, summed."""
        clients = float(self.client_offline_s.sum() + self.client_online_s.sum())
        return clients + self.server_offline_s + self.server_online_s

    @property
    def online_s(self) -> float:
        """The critical path's computation: masked input, summing and unmasking."""
        return float(self.client_online_s.sum()) + self.server_online_s


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The unmasked aggregate, who is in it, and the round's costs."""

    aggregate: U32Vector
    survivors: frozenset[int]
    stats: RoundStats


class PartyMeter:
    """Charges wall time and bytes to the parties of one protocol instance.

    With ``pairs`` (the :class:`~fedstrata.secagg.prg.PairSecrets` memo its clients
    share) a party is also charged the pair secrets it took from the memo.
    ``online`` calls are split further: :meth:`client_input` and :meth:`serve_input`
    mark the masked-input step, so :class:`RoundStats` tells masking from unmasking.
    """

    def __init__(self, n: int, pairs: PairSecrets | None = None) -> None:
        self.pairs = pairs
        self.offline = np.zeros(n)
        self.online = np.zeros(n)
        self.inputs = np.zeros(n)
        self.server = [0.0, 0.0]
        self.server_input = 0.0
        self.up = np.zeros(n, dtype=np.int64)
        self.down = np.zeros(n, dtype=np.int64)

    def client(self, cid: int, online: bool, call: Callable[..., _T], *args: object) -> _T:
        start = time.perf_counter()
        out = call(*args)
        spent = time.perf_counter() - start
        if self.pairs is not None:  # pair secrets the other end computed for this one
            spent += self.pairs.take_owed()
        (self.online if online else self.offline)[cid] += spent
        return out

    def serve(self, online: bool, call: Callable[..., _T], *args: object) -> _T:
        start = time.perf_counter()
        out = call(*args)
        spent = time.perf_counter() - start
        if self.pairs is not None:
            spent += self.pairs.take_owed()
        self.server[int(online)] += spent
        return out

    def client_input(self, cid: int, call: Callable[..., _T], *args: object) -> _T:
        """An online client call that masks the input (step 3)."""
        before = self.online[cid]
        out = self.client(cid, True, call, *args)
        self.inputs[cid] += self.online[cid] - before
        return out

    def serve_input(self, call: Callable[..., _T], *args: object) -> _T:
        """An online server call that sums a masked input (step 3)."""
        before = self.server[1]
        out = self.serve(True, call, *args)
        self.server_input += self.server[1] - before
        return out

    def stats(self, late_rejected: int = 0) -> RoundStats:
        """The costs charged so far."""
        return RoundStats(
            self.offline,
            self.online,
            self.server[0],
            self.server[1],
            self.up,
            self.down,
            late_rejected,
            self.inputs,
            self.server_input,
        )


def _check_inputs(inputs: Sequence[U32Vector], config: SecAggConfig, dropped: set[int]) -> None:
    if len(inputs) != config.num_clients:
        raise ConfigError(
            f"inputs has {len(inputs)} vectors, config.num_clients is {config.num_clients}"
        )
    stray = [c for c in dropped if not 0 <= c < config.num_clients]
    if stray:
        raise ConfigError(f"dropped ids {sorted(stray)} are outside [0, {config.num_clients - 1}]")


def drive_offline(
    clients: Sequence[ClientProtocol], server: ServerProtocol, meter: PartyMeter
) -> None:
    """Steps 0-2 (setup, keys, shares) for every client; ``clients[i].client_id == i``."""
    setup = meter.serve(False, server.setup)
    for c in clients:
        adv = meter.client(c.client_id, False, c.on_setup, setup)
        meter.down[c.client_id] += setup.nbytes
        meter.up[c.client_id] += adv.nbytes
        meter.serve(False, server.receive_keys, adv)
    directories = meter.serve(False, server.close_keys)
    for cid, directory in directories.items():
        shares = meter.client(cid, False, clients[cid].on_key_directory, directory)
        meter.down[cid] += directory.nbytes
        meter.up[cid] += shares.nbytes
        meter.serve(False, server.receive_shares, shares)
    bundles = meter.serve(False, server.close_shares)
    for cid, bundle in bundles.items():
        meter.client(cid, False, clients[cid].on_share_bundle, bundle)
        meter.down[cid] += bundle.nbytes


@dataclass(frozen=True)
class _Plan:
    dropped: frozenset[int]
    late: frozenset[int]
    observe: Callable[[MaskedInput], None] | None


def _send_inputs(
    clients: list[ClientProtocol],
    server: ServerProtocol,
    meter: PartyMeter,
    inputs: Sequence[U32Vector],
    plan: _Plan,
) -> list[MaskedInput]:
    late_msgs = []
    for c in clients:
        cid = c.client_id
        if cid in plan.dropped:
            continue
        msg = meter.client_input(cid, c.masked_input, inputs[cid])
        meter.up[cid] += msg.nbytes
        if plan.observe is not None:
            plan.observe(msg)
        if cid in plan.late:
            late_msgs.append(msg)
        else:
            meter.serve_input(server.receive_masked_input, msg)
    return late_msgs


def _online(
    clients: list[ClientProtocol],
    server: ServerProtocol,
    meter: PartyMeter,
    inputs: Sequence[U32Vector],
    plan: _Plan,
) -> tuple[U32Vector, int]:
    late_msgs = _send_inputs(clients, server, meter, inputs, plan)
    requests = meter.serve(True, server.close_inputs)
    rejected = 0
    for msg in late_msgs:
        try:
            server.receive_masked_input(msg)
        except ProtocolError:
            rejected += 1
    return _answer_unmask(clients, server, meter, requests), rejected


def _answer_unmask(
    clients: Sequence[ClientProtocol],
    server: ServerProtocol,
    meter: PartyMeter,
    requests: dict[int, UnmaskRequest],
) -> U32Vector:
    for cid, req in requests.items():
        resp = meter.client(cid, True, clients[cid].on_unmask_request, req)
        meter.down[cid] += req.nbytes
        meter.up[cid] += resp.nbytes
        meter.serve(True, server.receive_unmask, resp)
    result: U32Vector = meter.serve(True, server.finalize)
    return result


def drive_unmask(
    clients: Sequence[ClientProtocol], server: ServerProtocol, meter: PartyMeter
) -> U32Vector:
    """Steps 3 (deadline) and 4: close the inputs, collect the unmasking, finalize.

    For drivers that deliver the masked inputs themselves (one at a time, as they
    arrive). Returns ``server.finalize()``.

    Raises:
        SecAggError: too few clients survive to unmask (nothing revealed).
    """
    requests = meter.serve(True, server.close_inputs)
    return _answer_unmask(clients, server, meter, requests)


def simulate_round_detailed(
    inputs: Sequence[U32Vector],
    dropped: set[int] | frozenset[int],
    config: SecAggConfig,
    rng: np.random.Generator | None = None,
    *,
    round_id: int = 0,
    late: set[int] | frozenset[int] = frozenset(),
    share_pair_secrets: bool = False,
) -> SimulationResult:
    """Run one full round in-process and report the aggregate and its costs.

    Args:
        inputs: one uint32 vector of ``config.vector_length`` per client.
        dropped: clients that vanish after sharing keys (worst case: their masks
            must be recovered).
        config: the round's parameters.
        rng: seeds every party's secrets (reproducible, NOT secure); ``None`` uses
            the OS CSPRNG.
        round_id: the round number.
        late: clients whose masked input arrives after the deadline: treated as
            dropped, then delivered and rejected.
        share_pair_secrets: compute each X25519 pair secret once for both ends
            (:class:`~fedstrata.secagg.prg.PairSecrets`): about half the key
            agreements in this process, the same aggregate and per-party charges.

    Raises:
        ConfigError: the inputs or ids do not match ``config``.
        SecAggError: too few clients survive to unmask.
        InvalidUpdateError: an input is not a uint32 vector of the right length.
    """
    _check_inputs(inputs, config, set(dropped) | set(late))
    entropy = Entropy(rng)
    scheme = ShamirScheme(config.num_clients, config.threshold)
    expander = MaskExpander(config.vector_length)
    pairs = PairSecrets() if share_pair_secrets else None
    clients = [
        ClientProtocol(config, cid, entropy=entropy, scheme=scheme, expander=expander, pairs=pairs)
        for cid in range(config.num_clients)
    ]
    server = ServerProtocol(
        config, round_id, entropy=entropy, scheme=scheme, expander=expander, pairs=pairs
    )
    aggregate, stats = drive_round(clients, server, inputs, dropped, late, pairs=pairs)
    return SimulationResult(aggregate.copy(), server.survivors, stats)


def drive_round(
    clients: Sequence[ClientProtocol],
    server: ServerProtocol,
    inputs: Sequence[U32Vector],
    dropped: set[int] | frozenset[int],
    late: set[int] | frozenset[int] = frozenset(),
    *,
    observe: Callable[[MaskedInput], None] | None = None,
    pairs: PairSecrets | None = None,
) -> tuple[U32Vector, RoundStats]:
    """Move the messages of one round between ready-made state machines.

    ``clients[i]`` must have ``client_id == i``. ``observe`` sees every masked
    input as it leaves its client (the server's view). ``pairs`` is the memo the
    parties were built with, if any (its shared work is charged to both ends).
    Returns ``server.finalize()`` and the round's costs.

    Raises:
        SecAggError: too few clients survive to unmask.
    """
    meter = PartyMeter(len(clients), pairs)
    drive_offline(clients, server, meter)
    plan = _Plan(frozenset(dropped), frozenset(late), observe)
    aggregate, rejected = _online(list(clients), server, meter, inputs, plan)
    stats = meter.stats(rejected)
    return aggregate, stats


def simulate_round(
    inputs: Sequence[U32Vector],
    dropped: set[int] | frozenset[int],
    config: SecAggConfig,
    rng: np.random.Generator | None = None,
) -> U32Vector:
    """The unmasked sum of the surviving clients' inputs (mod ``2^modulus_bits``).

    See :func:`simulate_round_detailed` for arguments and errors.
    """
    return simulate_round_detailed(inputs, dropped, config, rng).aggregate
