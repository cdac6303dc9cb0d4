"""Text: semi-autoregressive block decoding (LLaDA), with optional confidence-threshold parallel commits (Fast-dLLM).

The target is split into blocks of `block_length` (None: one block, the whole target), decoded left to right. Within a block holding M masked tokens
and S steps, the first M % S steps commit M // S + 1 tokens and the rest M // S (LLaDA's even split). Which tokens:
`remasking="low_confidence"` commits the masked positions whose sampled token has the highest softmax probability;
`"random"` picks them at random. Positions outside the current block have confidence -inf. With `threshold=tau`
every masked position of the block whose confidence is >= tau is committed, and always at least the most confident
one (Fast-dLLM); a block then takes as many steps as it needs. With `stop_at_eos`, a row is done once `<eos>` is
committed and every position before it is filled; positions after `<eos>` become `<pad>`.
"""

from __future__ import annotations

import torch

from unimask.errors import InputError, InputTypeError, check_number

from .base import Generators, NotReadyError, SchedulerOutput, sample_tokens, token_probability, top_k_mask, uniform


def llada_split(masked_count: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) tokens to commit per step: M // S + 1 in the first M % S steps, M // S after."""
    base = masked_count // steps
    remainder = masked_count % steps
    counts = base[:, None].expand(-1, steps).clone()
    counts += (torch.arange(steps, device=masked_count.device)[None] < remainder[:, None]).long()
    return counts


class TextUnmaskingScheduler:
    def __init__(self, mask_id: int, eos_id: int, pad_id: int, block_length: int | None = None,
                 remasking: str = "low_confidence", temperature: float = 0.0, threshold: float | None = None,
                 stop_at_eos: bool = True):
        if remasking not in ("low_confidence", "random"):
            raise InputError(f"`remasking` must be 'low_confidence' or 'random', got {remasking!r}.")
        if threshold is not None:
            threshold = check_number("threshold", threshold, 0, 1, open_low=True)
        if not isinstance(stop_at_eos, bool):
            raise InputTypeError(f"`stop_at_eos` must be True or False, got {stop_at_eos!r}.")
        self.mask_id, self.eos_id, self.pad_id = mask_id, eos_id, pad_id
        if block_length is not None:
            block_length = check_number("block_length", block_length, 1, integer=True)
        self.block_length = block_length
        self.remasking = remasking
        self.temperature = check_number("temperature", temperature, 0)
        self.threshold = threshold
        self.stop_at_eos = stop_at_eos
        self._ready = False

    def round_steps(self, num_steps: int, target_length: int) -> int:
        """The nearest valid step count at or below `num_steps`: a multiple of the number of blocks (at least one
        step per block)."""
        blocks = -(-target_length // (self.block_length or target_length))
        return max(blocks, num_steps - num_steps % blocks)

    def set_timesteps(self, num_steps: int, target_length: int) -> None:
        """Plan `num_steps` model calls over a text target of `target_length` tokens (reset all state)."""
        check_number("num_steps", num_steps, 1, integer=True)
        check_number("target_length", target_length, 1, integer=True)
        self.block_size = self.block_length or target_length
        self.num_blocks = -(-target_length // self.block_size)
        if num_steps % self.num_blocks:
            raise ValueError(f"`num_steps` ({num_steps}) must be a multiple of the number of blocks "
                             f"({self.num_blocks} = ceil({target_length} / block_length {self.block_size})).")
        self.steps_per_block = num_steps // self.num_blocks
        self.target_length = target_length
        self.block = 0
        self.block_step = 0
        self.plan: torch.Tensor | None = None
        self._ready = True

    def _block_bounds(self) -> tuple[int, int]:
        start = self.block * self.block_size
        return start, min(start + self.block_size, self.target_length)

    def step(self, logits: torch.Tensor, tokens: torch.Tensor, generator: Generators = None) -> SchedulerOutput:
        """logits (B, N, V) already restricted to text ids; tokens (B, N) with [MASK] where undecided."""
        if not self._ready:
            raise NotReadyError("call set_timesteps(num_steps, target_length) before step().")
        B, N = tokens.shape
        if N != self.target_length:
            raise ValueError(f"expected a target of {self.target_length} tokens, got {N}.")
        masked = tokens == self.mask_id
        start, end = self._block_bounds()
        in_block = torch.zeros(N, dtype=torch.bool, device=tokens.device)
        in_block[start:end] = True
        if self.block_step == 0 and self.threshold is None:
            self.plan = llada_split((masked & in_block).sum(dim=1), self.steps_per_block)

        predicted = sample_tokens(logits, self.temperature, generator)  # (B, N)
        if self.remasking == "low_confidence":
            score = token_probability(logits, predicted).double()
        else:
            score = uniform((B, N), generator, tokens.device)
        candidates = masked & in_block
        confidence = torch.where(candidates, score, torch.tensor(float("-inf"), dtype=torch.float64,
                                                                  device=tokens.device))
        if self.threshold is None:
            commit = top_k_mask(confidence, self.plan[:, self.block_step]) & candidates
        else:
            best = top_k_mask(confidence, candidates.any(dim=1).long())
            commit = candidates & ((confidence >= self.threshold) | best)
        new_tokens = torch.where(commit, predicted, tokens)

        self.block_step += 1
        block_filled = ~((new_tokens == self.mask_id) & in_block).any()
        block_over = block_filled if self.threshold is not None else self.block_step == self.steps_per_block
        if block_over:
            self.block += 1
            self.block_step = 0
        done = ~(new_tokens == self.mask_id).any(dim=1)
        if self.stop_at_eos:
            is_eos = new_tokens == self.eos_id
            has_eos = is_eos.any(dim=1)
            first_eos = torch.where(has_eos, is_eos.long().argmax(dim=1), torch.full_like(has_eos, N, dtype=torch.long))
            positions = torch.arange(N, device=tokens.device)[None]
            before_filled = ~((new_tokens == self.mask_id) & (positions < first_eos[:, None])).any(dim=1)
            finished = has_eos & before_filled
            new_tokens = torch.where(finished[:, None] & (positions > first_eos[:, None]), self.pad_id, new_tokens)
            done = done | finished
        return SchedulerOutput(new_tokens, commit, confidence.float(), done)

    @property
    def finished(self) -> bool:
        return self._ready and self.block >= self.num_blocks
