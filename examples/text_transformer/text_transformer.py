"""A small transformer text classifier built from a config in code: a fedstrata task
(Issue 14 part 5).

``TextConfig`` (a dataclass) sizes a ``torch.nn.TransformerEncoder`` with learned
position embeddings and a classification head; change the config, not the code, to
try another size. The data are synthetic token sequences made in memory from the
client id (no files, no downloads): each sequence is about one of three topics,
whose words are scattered among common words, and the label is the topic. Each
client has its own topic mix. The task brings its own optimizer (AdamW), learning
rate schedule (warm-up then cosine) and training loop (gradient clipping and
accumulation), and an evaluation returning accuracy, macro F1 and loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import f1_score
from torch import nn

from fedstrata.torch_adapter import LocalTraining, Task

NUM_CLIENTS = 6
Tokens = tuple[NDArray[np.int64], NDArray[np.int64]]


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 200
    max_len: int = 24
    d_model: int = 32
    heads: int = 4
    layers: int = 2
    ff_dim: int = 64
    dropout: float = 0.1
    classes: int = 3


CONFIG = TextConfig()


class TransformerClassifier(nn.Module):
    """Token and position embeddings, a TransformerEncoder, mean pooling, a head."""

    def __init__(self, cfg: TextConfig = CONFIG) -> None:
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=0)
        self.positions = nn.Embedding(cfg.max_len, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.d_model, cfg.classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens == 0
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.encoder(self.tokens(tokens) + self.positions(positions), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        logits: torch.Tensor = self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))
        return logits


# ---- synthetic token data, made from the client id --------------------------------------
def sequences(seed: int, n: int, mix: NDArray[np.float64], cfg: TextConfig = CONFIG) -> Tokens:
    """``n`` padded sequences; topic ``k``'s words are ids 2 + 10k .. 11 + 10k, the
    common words the rest of the vocabulary."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(cfg.classes, size=n, p=mix)
    x = np.zeros((n, cfg.max_len), dtype=np.int64)
    common = np.arange(2 + 10 * cfg.classes, cfg.vocab_size)
    for row, topic in enumerate(labels):
        length = int(rng.integers(cfg.max_len // 2, cfg.max_len + 1))
        x[row, :length] = rng.choice(common, length)
        spots = rng.choice(length, size=4, replace=False)
        x[row, spots] = 2 + 10 * topic + rng.integers(0, 10, 4)
    return x, labels.astype(np.int64)


def client_data(client: int) -> Tokens:
    mix = np.random.default_rng(1000 + client).dirichlet(np.full(CONFIG.classes, 2.0))
    return sequences(client, 120 + 20 * client, mix)


def test_data() -> Tokens:
    return sequences(10_000, 600, np.full(CONFIG.classes, 1 / CONFIG.classes))


# ---- optimizer, schedule, loop, metrics --------------------------------------------------
def adamw(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=5e-3, weight_decay=0.01)


def warmup_cosine(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Each round's local steps: 5 steps of warm-up, then a cosine decay to 10%."""

    def factor(step: int) -> float:
        if step < 5:
            return (step + 1) / 5
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / 40, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


ACCUMULATE = 2


def train(net: nn.Module, data: Tokens, ctx: LocalTraining) -> dict[str, float]:
    """Local loop: accumulate gradients over two minibatches, clip, step, schedule."""
    net.train()
    total, steps = 0.0, 0
    for i, (x, y) in enumerate(ctx.batches(), start=1):
        loss = ctx.loss(net(x), y)
        ctx.backward(loss / ACCUMULATE)  # loss.backward(), scaled under client.precision fp16
        total, steps = total + loss.item(), steps + 1
        if i % ACCUMULATE == 0:
            nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
            ctx.optimizer.step()
            ctx.optimizer.zero_grad()
            if ctx.scheduler is not None:
                ctx.scheduler.step()
    return {"train_loss": total / max(steps, 1)}


def evaluate(net: nn.Module, data: Tokens) -> dict[str, float]:
    x, y = data
    logits = net(torch.from_numpy(x))
    pred = logits.argmax(dim=1).numpy()
    return {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "loss": float(nn.functional.cross_entropy(logits, torch.from_numpy(y)).item()),
    }


task = Task(
    model=TransformerClassifier,
    client_data=client_data,
    num_clients=NUM_CLIENTS,
    test_data=test_data,
    optimizer=adamw,
    scheduler=warmup_cosine,
    train=train,
    evaluate=evaluate,
    name="text-transformer",
)
