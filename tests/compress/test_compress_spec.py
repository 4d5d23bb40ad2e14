"""CompressionSpec validation, presets, resolve_spec and the package's public surface."""

from __future__ import annotations

import pytest

from fedstrata import compress
from fedstrata.compress import PRESETS, CompressionSpec, resolve_spec
from fedstrata.errors import ConfigError


def test_public_api_surface() -> None:
    assert sorted(compress.__all__) == sorted(
        [
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
    )
    for name in compress.__all__:
        assert hasattr(compress, name)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"sparsify": "top"}, "sparsify"),
        ({"quantize": 16}, "quantize"),
        ({"quantize": True}, "quantize"),
        ({"sparsify": "topk", "density": 0.0}, "density"),
        ({"sparsify": "topk", "density": 1.5}, "density"),
        ({"sparsify": "topk", "density": float("nan")}, "density"),
        ({"density": 0.5}, "sparsify"),
        ({"stochastic": True}, "stochastic"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 2.5}, "block_size"),
        ({"zstd_level": 23}, "zstd_level"),
        ({"error_feedback": 1}, "error_feedback"),
    ],
)
def test_invalid_spec_names_the_field(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CompressionSpec(**kwargs)  # type: ignore[arg-type]


def test_presets_are_valid_and_named() -> None:
    assert {"none", "int8", "topk1_int8_ef", "topk01_int8_ef", "randk1_int8"} <= set(PRESETS)
    names = {spec.name for spec in PRESETS.values()}
    assert len(names) == len(PRESETS)
    assert PRESETS["topk1_int8_ef"].name == "topk0.01-q8-ef"


def test_resolve_spec_from_mapping_preset_and_overrides() -> None:
    spec = resolve_spec(
        {"sparsify": "topk", "density": 0.01, "quantize": 8, "error_feedback": True}
    )
    assert spec == PRESETS["topk1_int8_ef"]
    assert resolve_spec("int8") is PRESETS["int8"]
    assert resolve_spec({"preset": "topk1_int8_ef", "density": 0.05}).density == 0.05
    assert resolve_spec({"preset": "topk1_int8_ef", "sparsify": "none"}).density == 1.0
    assert resolve_spec(spec) is spec


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("int9", "unknown"), ({"densty": 0.1}, "densty"), ({"preset": 3}, "preset"), (7, "preset")],
)
def test_resolve_spec_rejects_bad_input(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        resolve_spec(value)  # type: ignore[arg-type]


def test_num_kept() -> None:
    spec = CompressionSpec(sparsify="topk", density=0.01)
    assert spec.num_kept(10_000) == 100
    assert spec.num_kept(10) == 1
    assert CompressionSpec().num_kept(10) == 10
