"""A minimal single-process training loop: forward process, model, ELBO loss, AdamW. Used by tests and small
experiments; the DeepSpeed trainer in `unimask.training.trainer` is the one for real runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from unimask.masking import MaskingConfig, diffusion_loss, forward_process
from unimask.model import MaskedDiffusionTransformer
from unimask.sequence import SequenceBatch
from unimask.vocab import UnifiedVocab


@dataclass
class MinimalTrainResult:
    losses: list[float] = field(default_factory=list)  # loss at every step
    steps: int = 0  # optimizer steps taken


def train_minimal(model: MaskedDiffusionTransformer, batches: Iterator[SequenceBatch], vocab: UnifiedVocab,
                  steps: int, lr: float = 1e-3, weight_decay: float = 0.0, warmup: int = 20,
                  masking: MaskingConfig | None = None, generator: torch.Generator | None = None,
                  stop_when: Callable[[int, float], bool] | None = None) -> MinimalTrainResult:
    """Train for `steps` AdamW steps (linear warm-up, then constant lr) or until `stop_when(step, loss)` is true."""
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    masking = masking or MaskingConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    result = MinimalTrainResult()
    model.train()
    device = model.device
    for step in range(steps):
        batch = next(batches).to(device)
        noisy = forward_process(batch, vocab, masking, generator)
        logits = model(noisy.input_ids, segment_ids=noisy.clean.segment_ids,
                       position_ids=noisy.clean.position_ids).logits
        loss = diffusion_loss(logits, noisy, vocab, masking.task_weights).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        result.losses.append(loss.item())
        result.steps = step + 1
        if stop_when is not None and stop_when(step, result.losses[-1]):
            break
    model.eval()
    return result
