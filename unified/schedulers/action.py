"""Actions: the whole chunk in a few confidence-ordered parallel steps.

With N action tokens to write (the chunk's tokens minus those the caller gave, per row) and S steps (1 to 4 is the
intended range), after step s round(N * (1 - (s + 1) / S)) tokens stay masked, so every token is committed by the
last step and each step writes an even share. Each step predicts every masked token (argmax at temperature
0) and commits the most confident ones. With `remask_threshold`, tokens committed at earlier steps whose probability
under the current step's logits fell below the threshold are masked again (Discrete-Diffusion-VLA's secondary
re-masking), except at the last step; the re-masked tokens are decided again in later steps.
"""

from __future__ import annotations

import torch

from unimask.errors import check_number

from .base import FixedStepScheduler, Generators, SchedulerOutput, sample_tokens, token_probability, top_k_mask


class ActionUnmaskingScheduler(FixedStepScheduler):
    def __init__(self, mask_id: int, temperature: float = 0.0, remask_threshold: float | None = None):
        if remask_threshold is not None:
            remask_threshold = check_number("remask_threshold", remask_threshold, 0, 1, open_low=True, open_high=True)
        self.mask_id = mask_id
        self.temperature = check_number("temperature", temperature, 0)
        self.remask_threshold = remask_threshold

    def set_timesteps(self, num_steps: int, num_tokens: int, given: torch.Tensor | None = None) -> None:
        """`given` (B, N) bool marks tokens supplied by the caller (infill); they are never re-masked."""
        self._start(num_steps, num_tokens)
        self.given = given
        self.to_write: torch.Tensor | None = None  # (B,) masked tokens at the first step

    def step(self, logits: torch.Tensor, tokens: torch.Tensor, generator: Generators = None) -> SchedulerOutput:
        self._check_can_step()
        last = self.step_index == self.num_steps - 1
        masked = tokens == self.mask_id
        if self.remask_threshold is not None and self.step_index > 0 and not last:
            current = token_probability(logits, tokens.clamp(max=logits.shape[-1] - 1))
            given = self.given if self.given is not None else torch.zeros_like(masked)
            doubtful = ~masked & ~given & (current < self.remask_threshold)
            tokens = torch.where(doubtful, self.mask_id, tokens)
            masked = masked | doubtful
        predicted = sample_tokens(logits, self.temperature, generator)
        confidence = torch.where(masked, token_probability(logits, predicted), torch.tensor(float("-inf")))
        if self.step_index == 0:
            self.to_write = masked.sum(dim=1)
        remaining_after = torch.round(self.to_write * (1 - (self.step_index + 1) / self.num_steps)).long()
        commit_count = (masked.sum(dim=1) - remaining_after).clamp(min=1)
        if last:
            commit_count = masked.sum(dim=1)
        commit = top_k_mask(confidence, commit_count) & masked
        new_tokens = torch.where(commit, predicted, tokens)
        self.step_index += 1
        done = ~(new_tokens == self.mask_id).any(dim=1)
        return SchedulerOutput(new_tokens, commit, confidence, done)
