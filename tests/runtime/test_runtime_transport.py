"""Chunked streaming: laws of the chunker/reassembler, bounded memory, big models."""

import asyncio
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedstrata.api import run
from fedstrata.config import load_config
from fedstrata.core.payload import CodecId, Payload
from fedstrata.errors import ConfigError, PayloadError
from fedstrata.runtime import ChunkPlan, Reassembler, deployment, iter_chunks


@given(data=st.binary(min_size=1, max_size=5000), chunk=st.integers(1, 700))
def test_chunks_reassemble_to_the_original(data, chunk):
    payload = Payload(CodecId.DENSE_F32, b"", data).to_bytes()
    parts = list(iter_chunks(payload, chunk))
    assert all(1 <= len(p) <= chunk for p in parts)
    r = Reassembler(len(payload), len(payload))
    for p in parts:
        r.add(p)
    assert r.payload().body == data


def test_reassembler_refuses_lies_about_the_size():
    with pytest.raises(PayloadError, match="declares"):
        Reassembler(10**12, 1 << 20)  # refused before allocating
    r = Reassembler(8, 8)
    with pytest.raises(PayloadError, match="overran"):
        r.add(b"123456789")
    r.add(b"1234")
    with pytest.raises(PayloadError, match="ended after 4 of 8"):
        r.payload()


def test_chunk_plan_validates():
    with pytest.raises(ConfigError, match="chunk_bytes"):
        ChunkPlan(chunk_bytes=8 << 20)
    with pytest.raises(ConfigError, match="chunk_bytes"):
        ChunkPlan(chunk_bytes=0)


def test_streaming_memory_is_one_buffer_plus_a_chunk():
    data = Payload(CodecId.MODEL_F32, b"", bytes(8 << 20)).to_bytes()
    chunk = 64 << 10
    tracemalloc.start()
    try:
        r = Reassembler(len(data), len(data))
        for part in iter_chunks(data, chunk):
            r.add(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(data) + 4 * chunk  # the receive buffer and a few chunks, never 2x


BIG = [
    "output.run_store=false",
    "sim.workers=0",
    "data.num_clients=5",
    "rounds.clients_per_round=5",
    "rounds.rounds=1",
    "model.kind=mlp",
    "model.hidden=8192",
    "client.steps=1",
    "client.epochs=null",
]


def test_multi_megabyte_model_streams_in_small_chunks(federation):
    cfg = load_config(overrides=BIG)
    dep = deployment(cfg)
    size_bytes = dep.trainer.spec.nbytes
    chunk = 64 << 10
    assert size_bytes > 2 << 20  # a multi-MB model ...
    assert ChunkPlan(chunk).message_limit_bytes < size_bytes  # ... past the message limit
    result, _ = asyncio.run(federation(dep, chunk_bytes=chunk))
    sim = run(cfg).simulation
    assert result.params.tobytes() == sim.params.tobytes()
    assert result.rounds[0].bytes_down == sim.rounds[0].bytes_down
    assert not np.array_equal(result.params, dep.initial_params())
