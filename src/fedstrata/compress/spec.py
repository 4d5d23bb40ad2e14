"""What a compression chain does: one frozen, validated spec, and named presets.

A :class:`CompressionSpec` is the whole user-facing configuration of the update codec,
e.g. the YAML block ``compression: {sparsify: topk, density: 0.01, quantize: 8,
error_feedback: true}``. :func:`resolve_spec` turns a preset name or such a mapping into
a spec; every rule violation raises :class:`~fedstrata.errors.ConfigError` naming the
field, the value and the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

from fedstrata.errors import ConfigError

__all__ = ["PRESETS", "CompressionSpec", "Quantize", "Sparsify", "resolve_spec"]

Sparsify = Literal["none", "topk", "topk_approx", "randk"]
Quantize = Literal[32, 8, 4, 2, 1]

_SPARSIFY: tuple[str, ...] = get_args(Sparsify)
_QUANTIZE: tuple[int, ...] = get_args(Quantize)
MAX_BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class CompressionSpec:
    """Configuration of a compression chain: sparsify, then quantize, then zstd.

    Attributes:
        sparsify: ``"none"``; ``"topk"`` (exact top-k by magnitude); ``"topk_approx"``
            (threshold estimated from a sample, count within 10% of k); ``"randk"``
            (k random coordinates, the same for the whole cohort of a round).
        density: fraction of coordinates kept, in (0, 1]; must be 1 when ``sparsify``
            is ``"none"``.
        quantize: bits per value: 32 (float32, no quantization), 8, 4, 2 or 1.
        stochastic: unbiased stochastic rounding instead of round-to-nearest; needs
            ``quantize < 32``.
        block_size: values per quantization block (one float32 scale each).
        error_feedback: keep what was not sent per client and add it next round
            (needs a client state store).
        zstd: compress the body losslessly with zstandard.
        zstd_level: zstandard level, 1..22.
    """

    sparsify: Sparsify = "none"
    density: float = 1.0
    quantize: Quantize = 32
    stochastic: bool = False
    block_size: int = 256
    error_feedback: bool = False
    zstd: bool = False
    zstd_level: int = 3

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_numbers()

    def _check_choices(self) -> None:
        if self.sparsify not in _SPARSIFY:
            raise ConfigError(
                f"compression.sparsify must be one of {list(_SPARSIFY)}, got {self.sparsify!r}"
            )
        if isinstance(self.quantize, bool) or self.quantize not in _QUANTIZE:
            raise ConfigError(
                f"compression.quantize must be one of {list(_QUANTIZE)} bits, "
                f"got {self.quantize!r}"
            )
        for name in ("stochastic", "error_feedback", "zstd"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"compression.{name} must be a bool, got {getattr(self, name)!r}"
                )
        if self.stochastic and self.quantize == 32:
            raise ConfigError(
                "compression.stochastic=True needs quantize < 32 (there is nothing to round)"
            )

    def _check_numbers(self) -> None:
        density = self.density
        if isinstance(density, bool) or not isinstance(density, (int, float)):
            raise ConfigError(f"compression.density must be a number, got {density!r}")
        if not (math.isfinite(density) and 0.0 < density <= 1.0):
            raise ConfigError(f"compression.density must be in (0, 1], got {density}")
        if self.sparsify == "none" and density != 1.0:
            raise ConfigError(
                f"compression.density={density} needs sparsify to be set (sparsify is 'none')"
            )
        _check_int("block_size", self.block_size, 1, MAX_BLOCK_SIZE)
        _check_int("zstd_level", self.zstd_level, 1, 22)

    @property
    def name(self) -> str:
        """A short human-readable label, e.g. ``topk0.01-q8-ef``."""
        parts = [] if self.sparsify == "none" else [f"{self.sparsify}{self.density:g}"]
        if self.quantize != 32:
            parts.append(f"q{self.quantize}{'s' if self.stochastic else ''}")
        if self.error_feedback:
            parts.append("ef")
        if self.zstd:
            parts.append("zstd")
        return "-".join(parts) or "f32"

    def num_kept(self, size: int) -> int:
        """How many values a vector of ``size`` elements sends (k)."""
        if self.sparsify == "none":
            return size
        return min(size, max(1, round(self.density * size)))


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"compression.{name} must be an int in [{low}, {high}], got {value!r}")


PRESETS: dict[str, CompressionSpec] = {
    "none": CompressionSpec(),
    "int8": CompressionSpec(quantize=8),
    "int4_sr": CompressionSpec(quantize=4, stochastic=True),
    "sign_ef": CompressionSpec(quantize=1, error_feedback=True),
    "topk1_int8_ef": CompressionSpec(
        sparsify="topk", density=0.01, quantize=8, error_feedback=True
    ),
    "topk01_int8_ef": CompressionSpec(
        sparsify="topk", density=0.001, quantize=8, error_feedback=True
    ),
    "topk1_int8_ef_zstd": CompressionSpec(
        sparsify="topk", density=0.01, quantize=8, error_feedback=True, zstd=True
    ),
    "randk1_int8": CompressionSpec(sparsify="randk", density=0.01, quantize=8, stochastic=True),
}
"""Named specs for the common choices (see ``docs/compression.md``)."""


def resolve_spec(value: str | Mapping[str, object] | CompressionSpec) -> CompressionSpec:
    """A spec from a preset name, a mapping (YAML block) or a spec.

    A mapping may name a ``preset`` and override some of its fields, e.g.
    ``{"preset": "topk1_int8_ef", "density": 0.05}``.

    Raises:
        ConfigError: unknown preset or key, or a field that breaks a rule.
    """
    if isinstance(value, CompressionSpec):
        return value
    if isinstance(value, str):
        return _preset(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"compression must be a preset name or a mapping, got {value!r}")
    known = {f.name for f in fields(CompressionSpec)}
    unknown = sorted(set(value) - known - {"preset"})
    if unknown:
        raise ConfigError(f"compression has unknown keys {unknown}; known: {sorted(known)}")
    preset = value.get("preset", "none")
    if not isinstance(preset, str):
        raise ConfigError(f"compression.preset must be a preset name, got {preset!r}")
    overrides = {k: v for k, v in value.items() if k != "preset"}
    base = _preset(preset)
    if "sparsify" in overrides and overrides["sparsify"] == "none" and "density" not in overrides:
        overrides["density"] = 1.0
    return replace(base, **overrides)  # type: ignore[arg-type]


def _preset(name: str) -> CompressionSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"compression preset {name!r} is unknown; known: {sorted(PRESETS)}"
        ) from None
