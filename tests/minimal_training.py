"""A minimal single-process training loop for tests: the package's one training step (`unimask.training.step`)
on a plain-torch engine with AdamW, linear warm-up then a constant learning rate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionTransformer
from unimask.sequence import SequenceBatch
from unimask.training.engines import TorchEngine
from unimask.training.step import train_step
from unimask.vocab import UnifiedVocab


@dataclass
class MinimalTrainResult:
    losses: list[float] = field(default_factory=list)  # loss at every step
    steps: int = 0  # optimizer steps taken


def train_minimal(model: MaskedDiffusionTransformer, batches: Iterator[SequenceBatch], vocab: UnifiedVocab,
                  steps: int, lr: float = 1e-3, warmup: int = 20, masking: MaskingConfig | None = None,
                  generator: torch.Generator | None = None,
                  stop_when: Callable[[int, float], bool] | None = None) -> MinimalTrainResult:
    """Train for `steps` AdamW steps or until `stop_when(step, loss)` is true."""
    masking = masking or MaskingConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    engine = TorchEngine(model, optimizer, schedule, grad_clip=1.0, grad_accum=1, world=1, device=model.device)
    result = MinimalTrainResult()
    model.train()
    for step in range(steps):
        loss, _ = train_step(engine, next(batches).to(model.device), vocab, masking, generator)
        result.losses.append(float(loss.loss.detach()))
        result.steps = step + 1
        if stop_when is not None and stop_when(step, result.losses[-1]):
            break
    model.eval()
    return result
