import numpy as np
import pytest

from fedstrata.core import CodecId, Payload, RoundContext
from fedstrata.errors import PayloadError, PipelineError
from fedstrata.pipeline import DenseCodec, Pipeline


class Scale:
    def __init__(self, name, factor, requires=frozenset()):
        self.name, self.factor, self.requires_before = name, factor, frozenset(requires)

    def encode(self, vector, ctx):
        return vector * self.factor

    def decode(self, aggregate, ctx):
        return aggregate / self.factor


CTX = RoundContext(0, 0).for_client(1)


def test_pipeline_runs_stages_in_order_and_reverse_on_decode():
    pipe = Pipeline([Scale("a", 2.0), Scale("b", 3.0, {"a"})], DenseCodec(3))
    payload = pipe.encode(np.ones(3, np.float32), CTX)
    out = np.zeros(3)
    pipe.codec.accumulate(payload, out, 0.5)
    np.testing.assert_allclose(out, 3.0)
    np.testing.assert_allclose(pipe.decode_aggregate(np.full(3, 6.0, np.float32), CTX.round), 1.0)


def test_pipeline_checks_order_at_construction():
    with pytest.raises(PipelineError, match=r"needs \['a'\] earlier"):
        Pipeline([Scale("b", 3.0, {"a"}), Scale("a", 2.0)], DenseCodec(3))
    with pytest.raises(PipelineError, match="twice"):
        Pipeline([Scale("a", 2.0), Scale("a", 2.0)], DenseCodec(3))


def test_dense_codec_rejects_bad_payloads_without_touching_the_sum():
    codec = DenseCodec(3)
    out = np.ones(3)
    bad = [
        Payload(CodecId.DENSE_F32, b"", b"\x00" * 8),
        Payload(CodecId.CHAIN, b"", b"\x00" * 12),
        Payload(CodecId.DENSE_F32, b"", np.array([1, np.nan, 0], "<f4").tobytes()),
    ]
    for payload in bad:
        with pytest.raises(PayloadError):
            codec.accumulate(payload, out, 1.0)
    np.testing.assert_array_equal(out, 1.0)
    assert codec.nbytes() == len(Payload(CodecId.DENSE_F32, b"", b"\x00" * 12).to_bytes())
