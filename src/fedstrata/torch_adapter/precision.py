"""Mixed-precision local training: one policy for every training path (Issue 17 part 1).

Micikevicius et al., "Mixed Precision Training", ICLR 2018: the forward pass runs in
16-bit where it is safe, the weights, their gradients and the optimizer's state stay
float32 ("master weights"), and with float16 the loss is scaled before ``backward``
so small gradients do not underflow; a step whose gradients overflow is skipped and
the scale lowered (dynamic loss scaling).

:class:`PrecisionPolicy` is the resolved ``client.precision``:

* ``fp32``: nothing changes (no autocast, no scaling, no extra work);
* ``bf16``: the module's forward runs under ``torch.autocast(dtype=torch.bfloat16)``;
  no loss scaling (bfloat16 has float32's exponent range);
* ``fp16``: the forward under ``torch.autocast(dtype=torch.float16)`` and dynamic
  loss scaling (:class:`LossScaler`);
* ``auto``: ``bf16`` where the hardware has native bfloat16 arithmetic, else ``fp32``
  (:func:`native_bf16`); decided where the trainer is built, i.e. on the machine that
  trains (a worker process, a Ray actor, a deployment's client).

The parameters are never cast: the module keeps its float32 parameters (bound to the
flat float32 vector) and autocast casts copies for eligible ops (matmul, conv), so
gradients, optimizer state and the update (``new - old`` of the flat vector) are
float32 whatever the precision. :meth:`PrecisionPolicy.autocast_forward` wraps the
module's ``forward`` for the duration of local training, so every loop (the flat
in-place SGD path, the ``torch.optim`` loop, a task's own ``train``) gets the same
treatment, and floating outputs are cast back to float32 so the loss is computed in
float32 whoever computes it. Evaluation runs in float32.

:class:`MixedPrecision` is one client-round's state: its :meth:`~MixedPrecision.backward`
scales the loss (fp16), unscales the gradients in place and records whether they are
finite; :meth:`~MixedPrecision.step_allowed` says whether to apply the optimizer
step, and updates the scale. A fresh one per client and round keeps training
deterministic whichever worker trains the client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, final

import torch
from torch import nn

from fedstrata.errors import ConfigError

__all__ = [
    "LossScaler",
    "MixedPrecision",
    "Precision",
    "PrecisionPolicy",
    "ScaledOptimizer",
    "native_bf16",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_LOW = (torch.bfloat16, torch.float16)


class Precision(StrEnum):
    """The ``client.precision`` setting."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    AUTO = "auto"


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type``'s hardware computes in bfloat16 natively.

    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` (Ampere and
    later). CPU: the AVX-512 BF16 or AMX instructions (``torch.cpu`` capability
    checks); without them bfloat16 is emulated and slower than float32. Any other
    device: False.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
    if device_type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def _to_fp32(out: Any) -> Any:
    """``out`` with its bfloat16/float16 tensors (in tuples, lists, dicts) as float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in _LOW else out
    if isinstance(out, tuple | list):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


@final
@dataclass(frozen=True)
class PrecisionPolicy:
    """A resolved precision (never ``auto``) on one device type.

    Attributes:
        mode: ``fp32``, ``bf16`` or ``fp16``.
        device_type: where the module computes (``"cpu"``, ``"cuda"``).
    """

    mode: Precision = Precision.FP32
    device_type: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode is Precision.AUTO:
            raise ConfigError("PrecisionPolicy.mode must be resolved: use PrecisionPolicy.of")

    @classmethod
    def of(cls, precision: Precision | str, device_type: str = "cpu") -> PrecisionPolicy:
        """Resolve ``precision`` (``auto``: bf16 with native support, else fp32).

        Raises:
            ConfigError: an unknown name, or 16-bit autocast unavailable on the device.
        """
        try:
            mode = Precision(precision)
        except ValueError:
            allowed = ", ".join(p.value for p in Precision)
            raise ConfigError(f"precision must be one of {allowed}; got {precision!r}") from None
        if mode is Precision.AUTO:
            mode = Precision.BF16 if native_bf16(device_type) else Precision.FP32
        if mode is not Precision.FP32 and not torch.amp.is_autocast_available(device_type):
            raise ConfigError(
                f"precision {mode.value}: torch {torch.__version__} has no autocast on "
                f"device {device_type!r}; use fp32"
            )
        return cls(mode, device_type)

    @property
    def dtype(self) -> torch.dtype:
        """The forward pass's compute dtype (float32 for fp32)."""
        return _DTYPES.get(self.mode.value, torch.float32)

    @property
    def scaled(self) -> bool:
        """Whether the loss is scaled (fp16)."""
        return self.mode is Precision.FP16

    @contextmanager
    def autocast_forward(self, module: nn.Module) -> Iterator[None]:
        """Run ``module``'s forward under autocast (outputs back in float32) inside.

        The module's instance ``forward`` is replaced and restored on exit; with fp32
        nothing is touched.
        """
        if self.mode is Precision.FP32:
            yield
            return
        own = module.__dict__.get("forward")
        inner = module.forward

        @functools.wraps(inner)
        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(self.device_type, dtype=self.dtype):
                out = inner(*args, **kwargs)
            return _to_fp32(out)

        module.forward = forward
        try:
            yield
        finally:
            if own is None:
                del module.forward
            else:
                module.forward = own

    def start(self) -> MixedPrecision:
        """The state of one client's round of local training."""
        return MixedPrecision(LossScaler() if self.scaled else None)


@final
@dataclass
class LossScaler:
    """Dynamic loss scaling with ``torch.amp.GradScaler``'s defaults.

    The scale starts at ``init_scale``; a step with a non-finite gradient is skipped
    and the scale multiplied by ``backoff_factor``; after ``growth_interval``
    consecutive finite steps it is multiplied by ``growth_factor``. It never drops
    below ``min_scale`` (a model that yields NaN at every step cannot drive it to 0).

    Attributes:
        scale: the current scale.
        skipped: steps skipped so far.
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 2.0**-24
    skipped: int = 0
    _good: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.scale or not self.growth_factor > 1:
            raise ConfigError(
                "LossScaler: need 0 < min_scale <= scale and growth_factor > 1; got "
                f"min_scale={self.min_scale}, scale={self.scale}, growth={self.growth_factor}"
            )
        if not 0 < self.backoff_factor < 1:
            raise ConfigError(
                f"LossScaler.backoff_factor must be in (0, 1), got {self.backoff_factor}"
            )
        if self.growth_interval < 1:
            raise ConfigError(
                f"LossScaler.growth_interval must be >= 1, got {self.growth_interval}"
            )

    def unscale_(self, grads: Sequence[torch.Tensor]) -> bool:
        """Divide ``grads`` by the scale in place; True when all are finite."""
        if not grads:
            return True
        torch._foreach_mul_(list(grads), 1.0 / self.scale)
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def update(self, finite: bool) -> None:
        """Count a step: grow the scale after a finite run, back off (and skip) else."""
        if finite:
            self._good += 1
            if self._good == self.growth_interval:
                self.scale *= self.growth_factor
                self._good = 0
            return
        self.scale = max(self.scale * self.backoff_factor, self.min_scale)
        self._good = 0
        self.skipped += 1


Grads = Callable[[], list[torch.Tensor]]


@final
class MixedPrecision:
    """One client-round's loss scaling (see the module docstring); no-op without it."""

    def __init__(self, scaler: LossScaler | None) -> None:
        self.scaler = scaler
        self._finite = True

    def backward(self, loss: torch.Tensor, grads: Grads) -> bool:
        """``loss.backward()``; under fp16 scaled, with ``grads()`` unscaled after.

        Gradients already accumulated are rescaled first, so accumulating over
        several ``backward`` calls stays exact. Returns whether the gradients are
        finite (always True without scaling: nothing is checked).
        """
        if self.scaler is None:
            loss.backward()  # type: ignore[no-untyped-call]
            return True
        held = grads()
        if held:
            torch._foreach_mul_(held, self.scaler.scale)
        (loss * self.scaler.scale).backward()  # type: ignore[no-untyped-call]
        finite = self.scaler.unscale_(grads())
        self._finite = self._finite and finite
        return finite

    def step_allowed(self) -> bool:
        """Whether to apply the optimizer step now; counts it and updates the scale."""
        if self.scaler is None:
            return True
        finite, self._finite = self._finite, True
        self.scaler.update(finite)
        return finite

    def metrics(self) -> dict[str, float]:
        """``skipped_steps`` and the final ``loss_scale`` under fp16; else none."""
        if self.scaler is None:
            return {}
        return {"skipped_steps": float(self.scaler.skipped), "loss_scale": self.scaler.scale}

    def optimizer(self, opt: Any) -> Any:
        """``opt`` itself, or under fp16 a :class:`ScaledOptimizer` that skips steps."""
        return opt if self.scaler is None else ScaledOptimizer(opt, self)


@final
class ScaledOptimizer:
    """A task's optimizer under fp16: ``step()`` is skipped when the gradients of the
    last :meth:`MixedPrecision.backward` were not finite. Every other attribute is the
    wrapped optimizer's (``param_groups``, ``state``, ``state_dict`` ...)."""

    def __init__(self, inner: Any, mixed: MixedPrecision) -> None:
        self.inner = inner
        self._mixed = mixed

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.inner.param_groups
        return groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.inner.zero_grad(set_to_none)

    def step(self, closure: Any = None) -> Any:
        """The wrapped step, unless this step's gradients overflowed (then None)."""
        if not self._mixed.step_allowed():
            return None
        return self.inner.step() if closure is None else self.inner.step(closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
