"""Issue 14 part 1: ready-made readers for a task's client data (CSV tables, image folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fedstrata.core import LocalPlan, RoundContext
from fedstrata.errors import DataError
from fedstrata.torch_adapter import ImageFolder, Task, TaskPopulation, TorchTrainer, read_table


def test_read_table_csv(tmp_path: Path) -> None:
    path = tmp_path / "branch.csv"
    path.write_text("age,income,default\n30,1.5,0\n41,2.25,1\n")
    x, y = read_table(path, "default")
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x, [[30, 1.5], [41, 2.25]])
    np.testing.assert_array_equal(y, [0, 1])
    x2, _ = read_table(path, "default", features=["income"])
    assert x2.shape == (2, 1)
    with pytest.raises(DataError, match="no column 'label'"):
        read_table(path, "label")
    path.write_text("a,y\nfoo,1\n")
    with pytest.raises(DataError, match="data row 1: not a number"):
        read_table(path, "y")


def _image_folder(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_image_folder_trains_a_cnn_task(tmp_path: Path) -> None:
    """An image task: per-client folders, augmentation as a transform, a small CNN."""
    roots = [_image_folder(tmp_path / f"client{c}", c) for c in range(2)]
    flips: list[int] = []

    def flip(t: torch.Tensor) -> torch.Tensor:
        flips.append(1)
        return t.flip(-1)

    def cnn() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))

    folder = ImageFolder(roots[0], transform=flip)
    assert folder.classes == ["cat", "dog"]
    assert len(folder) == 6
    image, label = folder[4]
    assert image.shape == (1, 8, 8)
    assert label == 1
    assert float(image.min()) >= 0

    task = Task(model=cnn, client_data=lambda c: ImageFolder(roots[c], flip), num_clients=2)
    data = TaskPopulation(task).client(1)
    trainer = TorchTrainer(task)
    params = trainer.initial_params(0)
    out = np.empty_like(params)
    ctx = RoundContext(0, 1).for_client(1)
    result = trainer.train(params, data, LocalPlan(batch_size=4, lr=0.1), ctx, out)
    assert result.num_examples == 6
    assert result.num_steps == 2
    assert np.abs(out).sum() > 0
    assert flips
    with pytest.raises(DataError, match="no images"):
        ImageFolder(tmp_path / "client0" / "cat")
