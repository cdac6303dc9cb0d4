"""Images: MaskGIT's parallel decoding with a cosine (or linear / pow2) schedule.

With N image tokens and S steps, after step s (0-based) exactly `masked_count(N, S, s)` tokens stay masked:
floor(N * ratio((s + 1) / S)), clamped to at least 1 before the last step and at most the previous count minus 1,
and 0 after the last step. `ratio(r)` is the training mask schedule evaluated at t = 1 - r, so the same registry
(`unimask.masking`) serves training and decoding; for "cosine" it is MaskGIT's cos(pi/2 * r).

Each step samples a token for every masked position (temperature `temperature`), scores it by
log p + choice_temperature * (1 - (s + 1) / S) * Gumbel, and re-masks the lowest-scoring sampled positions.
"""

from __future__ import annotations

import math

import torch

from unimask.errors import InputError, check_number
from unimask.masking import MASK_SCHEDULES, get_mask_schedule

from .base import FixedStepScheduler, Generators, SchedulerOutput, gumbel_noise, sample_tokens


def masked_counts(num_tokens: int, num_steps: int, schedule: str = "cosine") -> list[int]:
    """Tokens still masked after each step, MaskGIT's rule."""
    ratio = get_mask_schedule(schedule)
    counts, previous = [], num_tokens
    for s in range(num_steps):
        if s == num_steps - 1:
            count = 0
        else:
            r = (s + 1) / num_steps
            count = math.floor(num_tokens * float(ratio(torch.tensor(1.0 - r, dtype=torch.float64))) + 1e-9)
            count = max(1, min(previous - 1, count))
        counts.append(count)
        previous = count
    return counts


class ImageUnmaskingScheduler(FixedStepScheduler):
    def __init__(self, mask_id: int, schedule: str = "cosine", temperature: float = 1.0,
                 choice_temperature: float = 4.5):
        if schedule not in MASK_SCHEDULES:
            raise InputError(f"`schedule` must be one of {sorted(MASK_SCHEDULES)}, got {schedule!r}.")
        self.mask_id = mask_id
        self.schedule = schedule
        self.temperature = check_number("temperature", temperature, 0)
        self.choice_temperature = check_number("choice_temperature", choice_temperature, 0)

    def set_timesteps(self, num_steps: int, num_tokens: int) -> None:
        self._start(num_steps, num_tokens)
        self.counts = masked_counts(num_tokens, num_steps, self.schedule)

    def step(self, logits: torch.Tensor, tokens: torch.Tensor, generator: Generators = None) -> SchedulerOutput:
        """logits (B, N, V) restricted to image ids; tokens (B, N) with [MASK] where undecided."""
        self._check_can_step()
        B, N = tokens.shape
        masked = tokens == self.mask_id
        sampled = sample_tokens(logits, self.temperature, generator)
        sampled = torch.where(masked, sampled, tokens)
        log_p = torch.log_softmax(logits.double(), dim=-1).gather(-1, sampled[..., None]).squeeze(-1)
        progress = (self.step_index + 1) / self.num_steps
        noise = self.choice_temperature * (1 - progress) * gumbel_noise(log_p.shape, generator, log_p.device)
        confidence = torch.where(masked, log_p + noise, torch.tensor(float("inf"), dtype=torch.float64,
                                                                      device=tokens.device))
        keep_masked = min(self.counts[self.step_index], int(masked.sum(dim=1).min()))
        order = confidence.argsort(dim=1, stable=True)  # lowest first
        remask = torch.zeros_like(masked)
        remask.scatter_(1, order[:, :keep_masked], True)
        new_tokens = torch.where(remask, self.mask_id, sampled)
        self.step_index += 1
        committed = masked & ~remask
        done = torch.full((B,), self.step_index == self.num_steps, device=tokens.device)
        return SchedulerOutput(new_tokens, committed, confidence.float(), done)
