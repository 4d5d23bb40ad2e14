"""Ready-made readers for a task's ``client_data`` (Issue 14 part 1).

* :func:`read_table` — a CSV file (standard library) or a Parquet file (pandas with
  pyarrow, when installed) as ``(x float32, y int64)`` arrays: one column is the
  label, the others (or the ones named) are numeric features.
* :class:`ImageFolder` — ``root/<class name>/<image>`` files (Pillow) as a map-style
  ``Dataset`` of ``(C, H, W)`` float32 tensors in ``[0, 1]`` and int labels, classes
  in sorted order; an optional ``transform`` (augmentation) runs on each tensor.

A branch's data are then ``lambda cid: read_table(f"branches/{cid}.csv", "default")``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, final

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from fedstrata.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "read_table"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if path.suffix.lower() in {".parquet", ".pq"}:
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # optional
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pandas and pyarrow") from None
        frame = pd.read_parquet(path)
        return [str(c) for c in frame.columns], frame.astype(str).values.tolist()
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (no header row)")
            return [h.strip() for h in header], [row for row in reader if row]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def read_table(
    path: str | Path, label: str, features: Sequence[str] | None = None
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """A CSV or Parquet table as ``(x, y)``: ``label`` column as int64, features float32.

    Args:
        path: ``.csv`` (standard library) or ``.parquet`` (needs pandas and pyarrow).
        label: the label column (integer class ids).
        features: the feature columns, in order; default: every other column.

    Raises:
        DataError: unreadable file, a missing column, or a non-numeric value (names
            the file, the column and the row).
    """
    path = Path(path)
    header, rows = _rows(path)
    names = list(features) if features is not None else [h for h in header if h != label]
    missing = [c for c in (label, *names) if c not in header]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(header)})")
    cols = [header.index(c) for c in names]
    x = np.empty((len(rows), len(cols)), dtype=np.float32)
    y = np.empty(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        try:
            x[r] = [float(row[c]) for c in cols]
            y[r] = int(float(row[header.index(label)]))
        except (ValueError, IndexError) as exc:
            raise DataError(f"{path}, data row {r + 1}: not a number ({exc})") from None
    return x, y


@final
class ImageFolder(Dataset[tuple[torch.Tensor, int]]):
    """Images under ``root/<class>/`` as ``(tensor, class index)`` pairs.

    Attributes:
        classes: the class folder names, sorted (their index is the label).
        files: ``(path, label)`` of every image, sorted.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        """Index the images (they are read lazily, one per ``__getitem__``).

        Args:
            root: the folder holding one sub-folder per class.
            transform: applied to each image tensor (e.g. augmentation).
            classes: the class names in label order (default: the sub-folders,
                sorted); pass the same list to every client so labels agree.

        Raises:
            DataError: ``root`` is not a folder or holds no images.
        """
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"ImageFolder: {self.root} is not a folder")
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        self.files = [
            (f, label)
            for label, name in enumerate(self.classes)
            if (self.root / name).is_dir()
            for f in sorted((self.root / name).iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.files:
            raise DataError(f"ImageFolder: no images under {self.root}/<class>/")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image  # deferred: only image tasks need Pillow

        path, label = self.files[index]
        with Image.open(path) as img:
            array: Any = np.asarray(img.convert("L" if img.mode in {"1", "L"} else "RGB"))
        tensor = torch.from_numpy(np.array(array, dtype=np.float32) / 255.0)
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, label
