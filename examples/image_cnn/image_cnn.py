"""An image CNN over each client's own pictures, with a custom torch ``Dataset`` and
augmentation: a fedstrata task (Issue 14 part 5).

Each client (a site with its own camera) holds 3x16x16 colour images of five shapes in
its own class mix and its own tint. ``ShapesDataset`` is an ordinary map-style
``torch.utils.data.Dataset``: it decodes the stored uint8 pixels and augments every
training example (random flips, shifts of up to two pixels, brightness jitter);
fedstrata batches it with a ``DataLoader`` shuffled by its per-(round, client) seed.
The CNN has batch normalisation; its running statistics are averaged with the
weights (set ``LOCAL_BN = True`` to keep them per client, FedBN). The images are
synthetic: the first run writes them to ``data/`` (``python image_cnn.py`` does too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import Dataset

from fedstrata.torch_adapter import Task

DATA = Path(__file__).resolve().parent / "data"
NUM_CLIENTS = 8
SHAPES = ("horizontal", "vertical", "cross", "box", "diagonal")
SIZE = 16
LOCAL_BN = False


# ---- the synthetic images (your sites have their own) -------------------------------
def _draw(rng: np.random.Generator, label: int, tint: NDArray[np.float64]) -> NDArray[np.uint8]:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    a, b = rng.integers(4, SIZE - 4, 2)
    if SHAPES[label] in ("horizontal", "cross"):
        mask[a, 2:-2] = True
    if SHAPES[label] in ("vertical", "cross"):
        mask[2:-2, b] = True
    if SHAPES[label] == "box":
        mask[a - 3 : a + 4, [b - 3, b + 3]] = True
        mask[[a - 3, a + 3], b - 3 : b + 4] = True
    if SHAPES[label] == "diagonal":
        idx = np.arange(SIZE)
        mask[idx, (idx + b) % SIZE] = True
    img = rng.normal(50, 25, (3, SIZE, SIZE)) + 170 * mask * tint[:, None, None]
    return img.clip(0, 255).astype(np.uint8)


def _write(path: Path, rng: np.random.Generator, n: int, mix: NDArray[np.float64]) -> None:
    tint = rng.uniform(0.5, 1.0, 3)
    labels = rng.choice(len(SHAPES), size=n, p=mix)
    np.savez(path, images=np.stack([_draw(rng, int(k), tint) for k in labels]), labels=labels)


def prepare_data(seed: int = 0) -> None:
    """Write each client's images (40 to 100, a Dirichlet class mix) and a test set."""
    rng = np.random.default_rng(seed)
    DATA.mkdir(exist_ok=True)
    for client in range(NUM_CLIENTS):
        mix = rng.dirichlet(np.full(len(SHAPES), 1.0))
        _write(DATA / f"client_{client}.npz", rng, int(rng.integers(40, 100)), mix)
    _write(DATA / "test.npz", rng, 500, np.full(len(SHAPES), 1 / len(SHAPES)))


# ---- the task -----------------------------------------------------------------------
class ShapesDataset(Dataset[tuple[torch.Tensor, int]]):
    """Stored uint8 images as float tensors in [0, 1], augmented when ``augment``."""

    def __init__(self, path: Path, augment: bool) -> None:
        with np.load(path) as f:
            self.images = torch.from_numpy(f["images"])
            self.labels = f["labels"].astype(np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i].float() / 255.0
        if self.augment:
            img = _augment(img)
        return img, int(self.labels[i])


def _augment(img: torch.Tensor) -> torch.Tensor:
    """Random flips, a shift of up to two pixels each way, brightness jitter."""
    if torch.rand(()) < 0.5:
        img = img.flip(-1)
    if torch.rand(()) < 0.5:
        img = img.flip(-2)
    shift = torch.randint(-2, 3, (2,))
    img = torch.roll(img, shifts=(int(shift[0]), int(shift[1])), dims=(-2, -1))
    return (img * torch.empty(()).uniform_(0.8, 1.2)).clamp(0.0, 1.0)


def client_data(client: int) -> ShapesDataset:
    return ShapesDataset(DATA / f"client_{client}.npz", augment=True)


def test_data() -> ShapesDataset:
    return ShapesDataset(DATA / "test.npz", augment=False)


class ShapesCNN(nn.Module):
    def __init__(self, classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


def make_task() -> Task:
    """The task the config names (``image_cnn:make_task``); writes the images first
    if ``data/`` has none."""
    if not (DATA / "test.npz").is_file():
        prepare_data()
    return Task(
        model=ShapesCNN,
        client_data=client_data,
        num_clients=NUM_CLIENTS,
        test_data=test_data,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        local_buffers=("features.1", "features.5") if LOCAL_BN else (),
        name="image-cnn",
    )


if __name__ == "__main__":
    prepare_data()
    print(f"wrote {NUM_CLIENTS} clients' images and test.npz to {DATA}")
