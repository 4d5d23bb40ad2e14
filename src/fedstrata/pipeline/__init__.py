"""Update pipeline: client stages, wire codecs, server decode."""

from fedstrata.pipeline.dense import DenseCodec
from fedstrata.pipeline.stage import Codec, Pipeline, Stage

__all__ = ["Codec", "DenseCodec", "Pipeline", "Stage"]
