"""A minimal confidence-ordered decoder, enough to check that a model has learned.

The full samplers (per-modality schedulers, guidance, prefix cache) live in `unimask.schedulers` and
`unimask.pipeline`; this routine is the plain baseline they are compared against.
"""

from __future__ import annotations

import torch

from .masking import modality_logit_bias
from .model import MaskedDiffusionTransformer
from .sequence import SequenceBatch
from .vocab import UnifiedVocab


@torch.no_grad()
def confidence_decode(model: MaskedDiffusionTransformer, batch: SequenceBatch, vocab: UnifiedVocab,
                      steps: int) -> torch.Tensor:
    """Fill every [MASK] in the batch's target in `steps` model calls, committing the most confident first.

    Each step commits ceil(remaining / steps_left) positions per row, so all are filled after the last step.
    Returns (B, L) ids.
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    ids = batch.input_ids.clone()
    bias = modality_logit_bias(vocab, device=ids.device)
    for step in range(steps):
        still_masked = (ids == vocab.mask_id) & batch.target_mask
        remaining = still_masked.sum(dim=1)  # (B,)
        if int(remaining.max()) == 0:
            break
        logits = model(ids, segment_ids=batch.segment_ids, position_ids=batch.position_ids).logits
        logits = logits.float() + bias[batch.modality_ids]  # (B, L, V)
        confidence, prediction = logits.softmax(dim=-1).max(dim=-1)  # (B, L)
        confidence = confidence.masked_fill(~still_masked, -1.0)
        to_commit = torch.div(remaining + (steps - step) - 1, steps - step, rounding_mode="floor")  # ceil
        order = confidence.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        commit = (rank < to_commit[:, None]) & still_masked
        ids = torch.where(commit, prediction, ids)
    return ids
