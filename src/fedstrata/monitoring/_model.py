"""``model.npz``: the final flat float32 parameters with their names and shapes.

Arrays: ``format_version``, ``params`` (float32, flat), ``names`` (unicode), ``ndims``
(one rank per parameter) and ``dims`` (all shapes concatenated). Loaded without pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fedstrata.core import FloatVector, ParamSpec
from fedstrata.errors import CheckpointCorrupt, CheckpointError
from fedstrata.monitoring._atomic import atomic_write

__all__ = ["read_model", "write_model"]

_MODEL_FORMAT_VERSION = 1


def write_model(path: Path, spec: ParamSpec, params: FloatVector) -> None:
    """Write ``params`` with ``spec`` to ``path`` atomically.

    Raises:
        ShapeError: ``params`` does not match ``spec``.
        CheckpointError: the file could not be written.
    """
    spec.check(params, "save_model params")
    dims = [d for shape in spec.shapes for d in shape]
    arrays = {
        "format_version": np.array(_MODEL_FORMAT_VERSION, dtype=np.int64),
        "params": params,
        "names": np.array(spec.names, dtype=np.str_),
        "ndims": np.array([len(s) for s in spec.shapes], dtype=np.int64),
        "dims": np.array(dims, dtype=np.int64),
    }

    def write(handle: BinaryIO) -> None:
        np.savez(handle, **arrays)  # type: ignore[arg-type]

    atomic_write(path, write)


def read_model(path: Path) -> tuple[ParamSpec, FloatVector]:
    """Read a model written by :func:`write_model`.

    Raises:
        CheckpointError: the file is missing.
        CheckpointCorrupt: it is not a valid model file (names the file and the fault).
    """
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (save_model was not called)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        return _model_from_arrays(arrays)
    except CheckpointCorrupt as exc:
        raise CheckpointCorrupt(f"{path}: {exc}") from exc
    except Exception as exc:  # NumPy/zipfile format faults (BadZipFile, CRC, pickle...)
        raise CheckpointCorrupt(f"{path}: not a valid model file: {exc!r}") from exc


def _model_from_arrays(arrays: dict[str, Any]) -> tuple[ParamSpec, FloatVector]:
    missing = {"format_version", "params", "names", "ndims", "dims"} - arrays.keys()
    if missing:
        raise CheckpointCorrupt(f"missing arrays {sorted(missing)}")
    if int(arrays["format_version"]) != _MODEL_FORMAT_VERSION:
        raise CheckpointCorrupt(f"unknown format_version {arrays['format_version']}")
    ndims = [int(n) for n in arrays["ndims"]]
    dims = [int(d) for d in arrays["dims"]]
    if sum(ndims) != len(dims) or len(ndims) != len(arrays["names"]):
        raise CheckpointCorrupt("names, ndims and dims disagree")
    shapes, start = [], 0
    for n in ndims:
        shapes.append(tuple(dims[start : start + n]))
        start += n
    spec = ParamSpec(names=tuple(str(s) for s in arrays["names"]), shapes=tuple(shapes))
    params = np.ascontiguousarray(arrays["params"])
    return spec, spec.check(params, "model params")
