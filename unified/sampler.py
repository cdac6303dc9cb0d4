"""The denoising loop: model -> guidance -> scheduler.step, until the scheduler says the target is done.

The batch must be collated with `padding_side="left"`, so every row's target sits in the same last columns. With a
model trained with `attention="prefix"`, the condition's keys and values do not depend on the target: they are
computed once (`PrefixCache`) and each step feeds only the target columns. This is exact, not an approximation.

Guidance: `logits = uncond + w * (cond - uncond)`, so `w = 1` is no guidance (LLaDA's `cfg` equals `w - 1`). The
unconditional branch is the same sequence with the condition payload replaced by [MASK] (the model saw that under
condition dropout in training); both branches run in one batched forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .masking import modality_logit_bias
from .model import MaskedDiffusionTransformer, PrefixCache
from .sequence import TARGET, SequenceBatch
from .vocab import UnifiedVocab


@dataclass
class GenerationOutput:
    tokens: torch.Tensor  # (B, N) vocabulary ids of the target payload
    input_ids: torch.Tensor  # (B, L) the whole sequences after decoding
    forward_passes: int  # model calls (a guided call runs both branches in one batch)
    trajectory: list[torch.Tensor] = field(default_factory=list)  # (B, N) payload after every step, if requested
    # (B, N, V) the restricted logits each written position was committed from (-inf rows where none was)
    logits: torch.Tensor | None = None


def _target_layout(batch: SequenceBatch) -> tuple[int, torch.Tensor]:
    """First target column, and the payload columns (relative to it) shared by every row."""
    is_target = batch.segment_ids == TARGET
    columns = is_target.all(dim=0)
    if not bool(columns.any()) or bool((is_target.any(dim=0) & ~columns).any()):
        raise ValueError("every row's target must occupy the same columns: collate with padding_side='left' and "
                         "one task per batch.")
    first = int(columns.nonzero()[0])
    if bool(columns[first:].logical_not().any()):
        raise ValueError("the target segment must be the last columns of the batch.")
    payload = batch.content_mask[:, first:]
    if bool((payload != payload[:1]).any()):
        raise ValueError("every row must have its target payload at the same columns.")
    return first, payload[0].nonzero().flatten()


@torch.no_grad()
def generate(model: MaskedDiffusionTransformer, batch: SequenceBatch, vocab: UnifiedVocab, scheduler: Any,
             num_steps: int, guidance_scale: float = 1.0, use_cache: bool = True,
             generator: torch.Generator | None = None, return_trajectory: bool = False,
             write: torch.Tensor | None = None, **timestep_kwargs: Any) -> GenerationOutput:
    """Fill the [MASK] positions of every row's target payload using `scheduler`. `write` (N,) bool, over the target
    payload, limits the scheduler to those positions (the rest keep what they hold, [MASK] included: a target of
    several segments is written segment by segment); `tokens` of the output are the written positions."""
    if guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
    first, payload = _target_layout(batch)
    if write is not None:
        payload = payload[write.to(payload.device)]
    device = model.device
    batch = batch.to(device)
    guided = guidance_scale != 1.0
    ids = batch.input_ids.clone()
    segments, positions, slots = batch.segment_ids, batch.position_ids, batch.slot_ids
    if guided:
        unconditional = ids.masked_fill(batch.condition_mask, vocab.mask_id)
        ids = torch.cat([ids, unconditional])
        segments, positions = torch.cat([segments, segments]), torch.cat([positions, positions])
        slots = torch.cat([slots, slots])
    features = dict(batch.features)
    if guided:
        features = {name: torch.cat([value, value]) for name, value in features.items()}
    rows = len(batch)
    # Each payload position may take only its own modality's ids (a target may span several modalities).
    bias = modality_logit_bias(vocab, device=device)[batch.modality_ids[0, first + payload]]  # (N, V)

    cache: PrefixCache | None = None
    if use_cache and model.config.attention == "prefix" and first > 0:
        cache = model(ids[:, :first], segment_ids=segments[:, :first], position_ids=positions[:, :first],
                      return_prefix_cache=True, features=features, slot_ids=slots[:, :first]).prefix_cache
    target_ids = ids[:rows, first:].clone()
    scheduler.set_timesteps(num_steps, len(payload), **timestep_kwargs)
    trajectory: list[torch.Tensor] = []
    passes = 0
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    committed_logits = torch.full((rows, len(payload), vocab.size), float("-inf"), device=device)
    for _ in range(num_steps * len(payload)):  # a hard bound; schedulers normally finish in num_steps
        feed = torch.cat([target_ids, target_ids]) if guided else target_ids
        if cache is not None:
            logits = model(feed, segment_ids=segments[:, first:], position_ids=positions[:, first:],
                           prefix_cache=cache, slot_ids=slots[:, first:]).logits
        else:
            full = torch.cat([ids[:, :first], feed], dim=1)
            logits = model(full, segment_ids=segments, position_ids=positions, features=features,
                           slot_ids=slots).logits[:, first:]
        passes += 1
        if guided:
            cond, uncond = logits[:rows], logits[rows:]
            logits = uncond + guidance_scale * (cond - uncond)
        logits = logits[:, payload].float() + bias  # (B, N, V)
        out = scheduler.step(logits, target_ids[:, payload], generator=generator)
        target_ids[:, payload] = torch.where(done[:, None], target_ids[:, payload], out.tokens)
        committed_logits = torch.where((out.committed & ~done[:, None])[..., None], logits, committed_logits)
        done = done | out.done
        if return_trajectory:
            trajectory.append(target_ids[:, payload].cpu().clone())
        if bool(done.all()):
            break
    final = batch.input_ids.clone()
    final[:, first:] = target_ids
    return GenerationOutput(target_ids[:, payload], final, passes, trajectory, committed_logits)
