"""``fedstrata model inspect``: what a config's model will cost, before it runs.

Issue 17 part 2. For the model the config trains (a built-in model or a task's own),
:func:`assess` reports its parameters, FLOPs per example, activation memory per batch
and training memory (:mod:`fedstrata.torch_adapter.footprint`), the size of one
update under each codec chain (the configured one and every preset, encoded from a
Gaussian vector of the model's size), and one round's time on each **device class**
of the profiles ``fedstrata run`` would use (generated, a CSV, or registered devices).

Device classes: the distinct (compute, memory, speed factor) profiles when there are at most
:data:`MAX_CLASSES` of them (a registry or a CSV of a few device models); otherwise
the slowest quarter, the middle half and the fastest quarter by compute. Times come
from the simulator's own model (:meth:`~fedstrata.sim.ProfileTable.legs_s`, the
simulator's ``flops_per_example``): a class's ``compute_s`` is its median client's
local training (the median of ``examples x FLOPs / (FLOP/s x speed factor)``, the
factor of the configured ``client.precision``), ``round_s`` its median
client's download + training + upload, and ``deadline_s`` the slowest of its clients'
(the ``rounds.deadline_s`` every client of the class needs to make it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedstrata.api.components import local_plan, population, resolve_task, trainer_factory
from fedstrata.api.fedeval import federated_split
from fedstrata.api.plan import predicted_flat_round_s, run_profiles
from fedstrata.compress.chain import encode_vector
from fedstrata.compress.spec import PRESETS, CompressionSpec
from fedstrata.config import FedConfig
from fedstrata.core.payload import HEADER_SIZE
from fedstrata.errors import TaskError
from fedstrata.sim import ProfileTable
from fedstrata.torch_adapter import TorchTrainer
from fedstrata.torch_adapter.footprint import ModelFootprint, measure_footprint

__all__ = ["MAX_CLASSES", "Assessment", "CodecSize", "DeviceClass", "assess", "device_classes"]

MAX_CLASSES = 8
FLOPS_MISMATCH = 0.10
GB = 1e9


@dataclass(frozen=True)
class CodecSize:
    """One update's encoded size under a codec chain.

    Attributes:
        name: ``dense`` (float32), ``configured`` or a preset name.
        chain: the chain's spec (``CompressionSpec.name``).
        bytes: the encoded payload, header included.
        ratio: dense bytes / these bytes.
    """

    name: str
    chain: str
    bytes: int
    ratio: float


@dataclass(frozen=True)
class DeviceClass:
    """One round on one class of devices (see the module docstring).

    Attributes:
        name: what defines the class.
        clients: clients in it.
        gflops: median compute at fp32, GFLOP/s.
        speedup: median speed factor at the configured precision (1 at fp32).
        memory_gb: the smallest memory in it.
        compute_s: median client's local training, simulated seconds.
        round_s: median client's download + training + upload.
        deadline_s: the slowest client's download + training + upload.
        fits: whether the smallest memory holds the training memory.
    """

    name: str
    clients: int
    gflops: float
    speedup: float
    memory_gb: float
    compute_s: float
    round_s: float
    deadline_s: float
    fits: bool


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` found; :meth:`to_json` for tools.

    Attributes:
        model: the task's name or the built-in model's kind.
        footprint: sizes, FLOPs and memory of the model.
        codecs: one update's size under each chain (dense first, then the configured
            chain when it compresses, then the presets).
        classes: one round on each device class.
        round_s: the expected flat round of the whole cohort (``fedstrata plan``).
        deadline_s: the configured ``rounds.deadline_s``, or None.
        warnings: what will not work as configured.
    """

    model: str
    footprint: ModelFootprint
    codecs: tuple[CodecSize, ...]
    classes: tuple[DeviceClass, ...]
    round_s: float
    deadline_s: float | None
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the footprint with its training memory)."""
        out = asdict(self)
        out["footprint"]["train_memory_bytes"] = self.footprint.train_memory_bytes
        out["warnings"] = list(self.warnings)
        return out


def device_classes(table: ProfileTable) -> list[tuple[str, NDArray[np.int64]]]:
    """(name, client ids) of each device class of ``table``."""
    keys = np.stack([table.flops, table.memory_gb, table.speedup], axis=1)
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    if len(distinct) <= MAX_CLASSES:
        return [(_class_name(*row), np.flatnonzero(inverse.ravel() == k))
                for k, row in enumerate(distinct)]  # fmt: skip
    order = np.argsort(table.flops, kind="stable").astype(np.int64)
    n = len(order)
    quarter = n // 4
    bands = [
        ("slowest 25%", 0, quarter),
        ("middle 50%", quarter, n - quarter),
        ("fastest 25%", n - quarter, n),
    ]
    return [(name, np.sort(order[lo:hi])) for name, lo, hi in bands if hi > lo]


def _class_name(flops: float, memory_gb: float, speedup: float) -> str:
    factor = "" if speedup == 1 else f", x{speedup:.3g}"
    return f"{flops / GB:.3g} GFLOP/s{factor}, {memory_gb:.3g} GB"


def _codec_sizes(size: int, configured: CompressionSpec) -> tuple[CodecSize, ...]:
    dense = HEADER_SIZE + 4 * size
    vector = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    chains = [("configured", configured)] if configured != CompressionSpec() else []
    chains += [(name, spec) for name, spec in PRESETS.items() if spec != CompressionSpec()]
    out = [CodecSize("dense", "float32", dense, 1.0)]
    for name, spec in chains:
        nbytes = encode_vector(vector, spec, np.random.default_rng(1), 0).payload.nbytes
        out.append(CodecSize(name, spec.name, nbytes, dense / nbytes))
    return tuple(out)


@dataclass(frozen=True)
class _Work:
    """What every client of the round does: examples, FLOPs, bytes each way."""

    examples: NDArray[np.int64]
    flops_per_example: float
    down_bytes: int
    up_bytes: int
    memory_bytes: int


def _one_class(name: str, ids: NDArray[np.int64], table: ProfileTable, work: _Work) -> DeviceClass:
    examples = work.examples[ids]
    down, compute, up = table.legs_s(
        ids, examples, work.flops_per_example, work.down_bytes, work.up_bytes
    )
    total = down + compute + up
    memory = float(table.memory_gb[ids].min())
    return DeviceClass(
        name=name,
        clients=len(ids),
        gflops=float(np.median(table.flops[ids])) / GB,
        speedup=float(np.median(table.speedup[ids])),
        memory_gb=memory,
        compute_s=float(np.median(compute)),
        round_s=float(np.median(total)),
        deadline_s=float(total.max()),
        fits=work.memory_bytes <= memory * GB,
    )


def _warnings(a: Assessment) -> tuple[str, ...]:
    fp, out = a.footprint, []
    need_gb = fp.train_memory_bytes / GB
    for c in a.classes:
        if not c.fits:
            out.append(
                f"device class {c.name} ({c.clients} clients, {c.memory_gb:.3g} GB) cannot "
                f"hold the model and a batch of {fp.batch_size} at {fp.precision}: "
                f"needs {need_gb:.3g} GB"
            )
        if a.deadline_s is not None and c.deadline_s > a.deadline_s:
            out.append(
                f"device class {c.name}: its slowest clients need {c.deadline_s:.3g} s, "
                f"more than rounds.deadline_s = {a.deadline_s:g} s (they will be late)"
            )
    counted = fp.counted_flops_per_example
    if counted and abs(fp.flops_per_example - counted) > FLOPS_MISMATCH * counted:
        out.append(
            f"the simulator's clock counts {fp.flops_per_example:.4g} FLOPs per example "
            f"(Linear, convolution and attention layers); FlopCounterMode "
            f"counts {counted:.4g}: simulated compute times are off by "
            f"{fp.flops_per_example / counted - 1:+.0%}"
        )
    return tuple(out)


def assess(config: FedConfig) -> Assessment:
    """Measure the config's model and predict its rounds (see the module docstring).

    Builds the data, the model and the device profiles as ``fedstrata run`` does.

    Raises:
        FedstrataError: invalid data or configuration, a model that fails on its
            example input, or an unreadable registry.
    """
    task = resolve_task(config)
    dataset = population(config, task)
    trainer = trainer_factory(config, dataset, task)()
    if not isinstance(trainer, TorchTrainer):  # the only trainer the factories build
        raise TaskError(f"model inspect needs a torch trainer, got {type(trainer).__name__}")
    plan = local_plan(config.client)
    footprint = measure_footprint(trainer, plan)
    codecs = _codec_sizes(trainer.spec.size, config.compression.spec())
    table = run_profiles(config, dataset.num_clients)
    sizes = federated_split(config, dataset, task).population.client_sizes()  # trained on
    work = _Work(
        examples=np.array([plan.num_samples(int(s)) for s in sizes], dtype=np.int64),
        flops_per_example=footprint.flops_per_example,
        down_bytes=codecs[0].bytes,
        up_bytes=next((c.bytes for c in codecs if c.name == "configured"), codecs[0].bytes),
        memory_bytes=footprint.train_memory_bytes,
    )
    classes = tuple(_one_class(n, ids, table, work) for n, ids in device_classes(table))
    draft = Assessment(
        model=trainer.task.name,
        footprint=footprint,
        codecs=codecs,
        classes=classes,
        round_s=predicted_flat_round_s(config, trainer, sizes, table),
        deadline_s=config.rounds.deadline_s,
        warnings=(),
    )
    return replace(draft, warnings=_warnings(draft))
