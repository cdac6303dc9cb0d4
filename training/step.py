"""The one training step every loop shares (the trainer, the benchmarks, the tests): the masked-diffusion loss of a
batch (`unimask.masking.diffusion_step`), then the engine's backward and its optimizer step at the accumulation
boundary. Nothing is read back to the host: the loss, the per-task losses and the engine's skip flag stay on the
device until the caller logs them.
"""

from __future__ import annotations

from typing import Any

import torch

from unimask.masking import DiffusionLoss, MaskingConfig, diffusion_step
from unimask.sequence import SequenceBatch
from unimask.vocab import UnifiedVocab


def train_step(engine: Any, batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
               generator: torch.Generator | None = None, autocast: torch.dtype | None = None,
               timer: Any = None) -> tuple[DiffusionLoss, bool]:
    """One micro-batch: `diffusion_step`, then `engine.backward(loss)` and `engine.step()`; returns the loss and
    whether this micro-batch ended an accumulation window (an optimizer step was attempted; whether it was taken,
    as opposed to skipped for a non-finite loss or gradient, is `engine.last_skipped`, a device tensor).
    `timer` (a `unimask.training.timing.StepTimer`) marks where forward, backward and the optimizer end."""
    result = diffusion_step(engine, batch, vocab, config, generator, autocast)
    if timer is not None:
        timer.mark("forward")
    engine.backward(result.loss)
    if timer is not None:
        timer.mark("backward")
    boundary = engine.step()
    if timer is not None:
        timer.mark("optimizer")
    return result, boundary
