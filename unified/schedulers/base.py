"""What every unmasking scheduler shares: the step output, logit restriction and confidence helpers.

A scheduler holds no model. The sampler calls the model, applies guidance and hands the scheduler the logits of the
target positions; the scheduler says which masked positions to commit, and with which tokens, at this step.
`set_timesteps(...)` resets all per-run state; `step` before it raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unimask.errors import check_number


@dataclass
class SchedulerOutput:
    tokens: torch.Tensor  # (B, N) long: the target after this step ([MASK] where still masked)
    committed: torch.Tensor  # (B, N) bool: positions written at this step
    confidence: torch.Tensor  # (B, N) float: the score used to choose them (-inf where not a candidate)
    done: torch.Tensor  # (B,) bool: the row needs no further model call


Generators = torch.Generator | list[torch.Generator] | None  # one for the batch, or one per row


def uniform(shape: torch.Size, generator: Generators, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float64 noise of `shape` (rows first). With one generator per row, each row's noise depends on
    its own generator only, so a request gives the same output alone or batched with others."""
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for {shape[0]} rows; give one per row.")
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=torch.float64).to(device) for g in generator])
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def gumbel_noise(shape: torch.Size, generator: Generators, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise in float64 (float32 Gumbel ties too often at low temperature, as LLaDA notes)."""
    u = uniform(shape, generator, device)
    return -torch.log(-torch.log(u.clamp(min=1e-20, max=1 - 1e-16)))


def sample_tokens(logits: torch.Tensor, temperature: float, generator: Generators) -> torch.Tensor:
    """argmax(logits / T + Gumbel) (a categorical draw at temperature T); T = 0 is plain argmax."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    noisy = logits.double() / temperature + gumbel_noise(logits.shape, generator, logits.device)
    return noisy.argmax(dim=-1)


def token_probability(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the chosen tokens, (B, N)."""
    return torch.softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


def top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: the k[b] highest scores of each row (ties broken by position)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    return ranks < k[:, None]


class NotReadyError(RuntimeError):
    """`step` was called before `set_timesteps`."""


class FixedStepScheduler:
    """State shared by schedulers that run exactly `num_steps` steps over `num_tokens` target tokens."""

    _ready = False

    def _start(self, num_steps: int, num_tokens: int) -> None:
        self.num_steps = check_number("num_steps", num_steps, 1, integer=True)
        self.num_tokens = check_number("num_tokens", num_tokens, 1, integer=True)
        self.step_index = 0
        self._ready = True

    def _check_can_step(self) -> None:
        if not self._ready:
            raise NotReadyError("call set_timesteps(num_steps, num_tokens) before step().")
        if self.step_index >= self.num_steps:
            raise RuntimeError(f"all {self.num_steps} steps are done; call set_timesteps again for a new run.")
