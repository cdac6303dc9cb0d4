"""The forward (masking) process and the masked-diffusion loss.

Training draws one time t in (eps, 1) per sequence, stratified across the batch so a batch always covers the
noise levels evenly (MDLM's antithetic sampling). Each target payload token is replaced by [MASK] independently with
probability p = schedule(t), where the schedule depends on the token's modality (each registered modality names its
default: linear for text as in LLaDA, cosine for image codes as in MaskGIT; `MaskingConfig.schedules` overrides
them). The loss is the cross entropy on masked positions weighted by 1/p (the ELBO weight of LLaDA/MDLM), summed and
divided by the number of target tokens.

`train_step` is the one training step every loop shares (the trainer, the benchmarks, the tests): forward process,
model, loss, then the engine's backward and optimizer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError, check_choice, check_number
from .registry import get_modality, modalities, tasks
from .sequence import TARGET, SequenceBatch, repeat_targets
from .vocab import UnifiedVocab

MaskSchedule = Callable[[torch.Tensor], torch.Tensor]
MASK_SCHEDULES: dict[str, MaskSchedule] = {}
MAX_TARGET_COPIES = 64  # masked copies of a target per condition pass (each copy lengthens the sequence)


def register_mask_schedule(name: str):
    """Register `fn(t) -> p_mask`, monotone with fn(0) = 0 and fn(1) = 1, under `name`."""

    def wrap(fn: MaskSchedule) -> MaskSchedule:
        MASK_SCHEDULES[name] = fn
        return fn

    return wrap


@register_mask_schedule("linear")
def linear_schedule(t: torch.Tensor) -> torch.Tensor:
    return t


@register_mask_schedule("cosine")
def cosine_schedule(t: torch.Tensor) -> torch.Tensor:
    # MaskGIT's mask ratio cos(pi/2 * r) written in terms of t = 1 - r.
    return torch.sin(0.5 * math.pi * t)


@register_mask_schedule("pow2")
def pow2_schedule(t: torch.Tensor) -> torch.Tensor:
    # MaskGIT's "pow" ratio 1 - r^2 written in terms of t = 1 - r.
    return 1 - (1 - t) ** 2


def get_mask_schedule(name: str) -> MaskSchedule:
    if name not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {name!r}; registered: {sorted(MASK_SCHEDULES)}.")
    return MASK_SCHEDULES[name]


@dataclass
class MaskingConfig:
    schedules: dict[str, str] = field(default_factory=dict)  # modality -> mask schedule; unset: the modality's own
    eps: float = 1e-3  # t is drawn from (eps, 1) so the 1/p weight stays bounded
    p_uncond: float = 0.1  # probability that a conditional sequence's condition is replaced by [MASK] (for CFG)
    condition_dropout: dict[str, float] = field(default_factory=dict)  # per task, instead of p_uncond (0: never)
    full_mask: dict[str, float] = field(default_factory=dict)  # per task: P(a target is masked whole, t = 1)
    target_copies: dict[str, int] = field(default_factory=dict)  # per task: masked copies per condition pass
    complementary: bool = False  # also train on the complement of each mask, so every target token is supervised
    task_weights: dict[str, float] = field(default_factory=dict)  # per-task loss weights; missing tasks weigh 1
    ordinal_sigma: dict[str, float] = field(default_factory=dict)  # modality -> Gaussian target width in codes

    def __post_init__(self) -> None:
        check_number("eps", self.eps, 0, 1, open_low=True, open_high=True, error=ConfigError)
        check_number("p_uncond", self.p_uncond, 0, 1, open_high=True, error=ConfigError)
        for name, values, open_high in (("condition_dropout", self.condition_dropout, True),
                                        ("full_mask", self.full_mask, False)):
            for task, value in values.items():
                check_number(f"{name}.{task}", value, 0, 1, open_high=open_high, error=ConfigError)
        for task, weight in self.task_weights.items():
            check_number(f"task_weights.{task}", weight, 0, error=ConfigError)
        for modality, sigma in self.ordinal_sigma.items():
            check_choice("ordinal_sigma", modality, tuple(modalities()), fix="its keys are modality names",
                         error=ConfigError)
            check_number(f"ordinal_sigma.{modality}", sigma, 0, open_low=True, error=ConfigError)
        for task, copies in self.target_copies.items():
            check_number(f"target_copies.{task}", copies, 1, MAX_TARGET_COPIES, integer=True, error=ConfigError)
        for name in ("condition_dropout", "full_mask", "target_copies", "task_weights"):
            for task in getattr(self, name):
                check_choice(name, task, tuple(tasks()), fix="its keys are task names", error=ConfigError)
        for modality, name in self.schedules.items():
            check_choice("schedules", modality, tuple(modalities()), fix="its keys are modality names",
                         error=ConfigError)
            check_choice(f"schedules.{modality}", name, tuple(MASK_SCHEDULES), error=ConfigError)

    def dropout_of(self, task: str) -> float:
        """The probability that a `task` sequence trains the unconditional branch (its condition all [MASK])."""
        return self.condition_dropout.get(task, self.p_uncond)

    def schedule_of(self, modality: str) -> str:
        """The mask schedule a target of `modality` trains with."""
        return self.schedules.get(modality) or get_modality(modality).mask_schedule


@dataclass
class MaskedBatch:
    """A batch after the forward process. With complementary masking it has twice the rows of the clean batch."""

    clean: SequenceBatch  # the (possibly doubled) clean batch; `clean.input_ids` are the loss targets
    input_ids: torch.Tensor  # (B, L) noisy ids fed to the model
    masked: torch.Tensor  # (B, L) bool: target positions replaced by [MASK] (the loss positions)
    p_mask: torch.Tensor  # (B, L) float: probability with which each position was masked
    t: torch.Tensor  # (B, C) the sampled time of each of a row's C target copies
    condition_dropped: torch.Tensor  # (B,) bool: condition replaced by [MASK] for the unconditional branch


@dataclass
class DiffusionLoss:
    loss: torch.Tensor  # scalar to backpropagate
    per_task: dict[str, float]  # each task's share of the loss, normalised by that task's target tokens
    num_masked: int  # masked tokens in the batch
    num_targets: int  # target tokens in the batch


def stratified_times(batch_size: int, eps: float, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """One t per row in (eps, 1): row i gets a uniform draw from its own stratum of width 1/B, in shuffled order."""
    strata = torch.randperm(batch_size, generator=generator, device=device)
    u = torch.rand(batch_size, generator=generator, device=device)
    return eps + (1 - eps) * (strata + u) / batch_size


def mask_probabilities(batch: SequenceBatch, t: torch.Tensor, vocab: UnifiedVocab, config: MaskingConfig
                       ) -> torch.Tensor:
    """(B, L) float: schedule_{modality}(t of the position's target copy) at target payload positions, 0 elsewhere."""
    p = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)
    target = batch.target_mask
    t_position = t.float().gather(1, (batch.segment_ids - TARGET).clamp(min=0, max=t.shape[1] - 1))  # (B, L)
    for index in torch.unique(batch.modality_ids[target]).tolist():
        where = target & (batch.modality_ids == index)
        p = torch.where(where, get_mask_schedule(config.schedule_of(vocab.modality_names[index]))(t_position), p)
    return p


def forward_process(batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
                    generator: torch.Generator | None = None) -> MaskedBatch:
    """Mask target tokens (and drop conditions) as the training objective prescribes: rows of a task with
    `target_copies` get that many differently masked copies of their target, a `full_mask` share of the copies is
    masked whole (the state decoding starts from), and a task's `condition_dropout` share of rows trains the
    unconditional branch."""
    device = batch.input_ids.device
    copies = torch.tensor([config.target_copies.get(task, 1) for task in batch.tasks])
    if bool((copies > 1).any()):
        batch = repeat_targets(batch, copies)
    rows, columns = len(batch), int(copies.max())
    t = stratified_times(rows * columns, config.eps, generator, device).view(rows, columns)
    if config.full_mask:
        whole = torch.tensor([config.full_mask.get(task, 0.0) for task in batch.tasks], device=device)
        t = torch.where(torch.rand(t.shape, generator=generator, device=device) < whole[:, None], 1.0, t)
    p = mask_probabilities(batch, t, vocab, config)
    target = batch.target_mask
    masked = target & (torch.rand(p.shape, generator=generator, device=device) < p)
    has_condition = batch.condition_mask.any(dim=1)
    dropout = torch.tensor([config.dropout_of(task) for task in batch.tasks], device=device)
    dropped = has_condition & (torch.rand(rows, generator=generator, device=device) < dropout)
    if config.complementary:
        batch = batch.repeat(2)
        complement = target & ~masked
        masked = torch.cat([masked, complement], dim=0)
        # The complement row is a draw of masking with probability 1 - p; clamp keeps its weight finite at p -> 1.
        p = torch.cat([p, torch.where(target, (1 - p).clamp(min=config.eps), p)], dim=0)
        t = torch.cat([t, 1 - t], dim=0)
        dropped = torch.cat([dropped, dropped], dim=0)
        target = batch.target_mask
    noisy = batch.input_ids.masked_fill(masked, vocab.mask_id)
    noisy = torch.where(dropped[:, None] & batch.condition_mask, vocab.mask_id, noisy)
    return MaskedBatch(batch, noisy, masked, p, t, dropped)


def modality_logit_bias(vocab: UnifiedVocab, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(number of modality indices, V): 0 where a target of that modality may take the id, -inf elsewhere (a padded
    modality, text, may also end with <eos> and <pad>). The special and mask rows allow everything but [MASK]."""
    bias = torch.zeros(len(vocab.modality_names), vocab.size, dtype=dtype, device=device)
    bias[:, vocab.mask_id] = float("-inf")
    for index, name in enumerate(vocab.modality_names):
        if name in ("special", "mask"):
            continue
        extra = ("eos", "pad") if get_modality(name).padded else ()
        bias[index] = torch.where(vocab.allowed_mask(name, extra, device=device), 0.0, float("-inf"))
    return bias


def ordinal_cross_entropy(logits: torch.Tensor, codes: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N,) cross entropy of logits (N, K) over ordered codes against a Gaussian around each true code (HL-Gauss):
    a near miss costs little, so ordered codes such as action bins learn like a regression, from fewer samples."""
    grid = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    target = torch.softmax(-(grid[None] - codes[:, None].float()) ** 2 / (2 * sigma ** 2), dim=-1)
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def diffusion_loss(logits: torch.Tensor, masked_batch: MaskedBatch, vocab: UnifiedVocab,
                   task_weights: dict[str, float] | None = None,
                   ordinal_sigma: dict[str, float] | None = None) -> DiffusionLoss:
    """ELBO-weighted cross entropy on masked positions, normalised by the number of target tokens.

    Logits are restricted to the position's modality (as decoding does), so no probability is spent on ids a
    target can never take. A modality in `ordinal_sigma` (its codes ordered, as action bins) is scored against a
    Gaussian over neighbouring codes instead of its one true code (`ordinal_cross_entropy`).
    """
    batch = masked_batch.clean
    target = batch.target_mask
    num_targets = int(target.sum())
    if num_targets == 0:
        raise ValueError("the batch has no target tokens; every sequence needs a target segment.")
    masked = masked_batch.masked
    bias = modality_logit_bias(vocab, device=logits.device, dtype=logits.dtype)
    masked_logits = logits[masked] + bias[batch.modality_ids[masked]]  # (N, V)
    ce = F.cross_entropy(masked_logits.float(), batch.input_ids[masked], reduction="none")  # (N,)
    for name, sigma in (ordinal_sigma or {}).items():
        if not vocab.has(name):
            continue
        where = batch.modality_ids[masked] == vocab.modality_index(name)
        if bool(where.any()):
            start, stop = vocab.range_of(name)
            ce = ce.masked_scatter(where, ordinal_cross_entropy(masked_logits[where, start:stop],
                                                                batch.input_ids[masked][where] - start, sigma))
    weight = 1.0 / masked_batch.p_mask[masked]
    row_weight = torch.tensor([(task_weights or {}).get(task, 1.0) for task in batch.tasks],
                              dtype=torch.float32, device=logits.device)
    rows = masked.nonzero()[:, 0]
    weighted = ce * weight * row_weight[rows]
    loss = weighted.sum() / num_targets

    per_task: dict[str, float] = {}
    targets_per_row = target.sum(dim=1)
    unweighted = (ce * weight).detach()
    for task in sorted(set(batch.tasks)):
        row_is_task = torch.tensor([t == task for t in batch.tasks], device=logits.device)
        n = int(targets_per_row[row_is_task].sum())
        if n:
            per_task[task] = float(unweighted[row_is_task[rows]].sum()) / n
    return DiffusionLoss(loss, per_task, int(masked.sum()), num_targets)


def diffusion_step(model: Any, batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
                   generator: torch.Generator | None = None, autocast: torch.dtype | None = None) -> DiffusionLoss:
    """Forward process, model, ELBO loss on one batch (no backward); `model` is the network or an engine wrapping it."""
    noisy = forward_process(batch, vocab, config, generator)
    device = noisy.input_ids.device
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        logits = model(noisy.input_ids, segment_ids=noisy.clean.segment_ids, position_ids=noisy.clean.position_ids,
                       features=noisy.clean.features).logits
    return diffusion_loss(logits, noisy, vocab, config.task_weights, config.ordinal_sigma)


def train_step(engine: Any, batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
               generator: torch.Generator | None = None, autocast: torch.dtype | None = None
               ) -> tuple[DiffusionLoss, bool]:
    """One micro-batch: `diffusion_step`, then `engine.backward(loss)` and `engine.step()` (which steps the optimizer
    at the accumulation boundary and says whether it did). `engine` is a `unimask.training.engines` engine."""
    result = diffusion_step(engine, batch, vocab, config, generator, autocast)
    engine.backward(result.loss)
    return result, engine.step()

