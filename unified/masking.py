"""The forward (masking) process and the masked-diffusion loss.

Training draws one time t in (eps, 1) per sequence, stratified across the batch so a batch always covers the
noise levels evenly (MDLM's antithetic sampling). Each target payload token is replaced by [MASK] independently with
probability p = schedule(t), where the schedule depends on the token's modality (each registered modality names its
default: linear for text as in LLaDA, cosine for image codes as in MaskGIT; `MaskingConfig.schedules` overrides
them). The loss is the cross entropy on masked positions weighted by 1/p (the ELBO weight of LLaDA/MDLM), summed and
divided by the number of target tokens.

Everything here runs on the batch's device without reading a value back to the host: per-task settings are looked
up from small tables by the batch's `task_ids`, and the loss is computed densely over every position (masked-out
positions weigh 0) instead of gathering the masked ones, whose number the host would have to know. A training loop
can then queue step after step on an accelerator and read the numbers (`DiffusionLoss.per_task()`) only when it
logs. The optimizer step belongs to the trainer (`unimask.training.step`).
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

    def tables(self, device: torch.device | str) -> "TaskTables":
        """The per-task settings as tensors indexed by `task_index`, made once per device."""
        device = torch.device(device)
        cache = self.__dict__.setdefault("_tables", {})
        names = list(tasks())
        if (device, len(names)) not in cache:
            def column(values: dict[str, float], default: float) -> torch.Tensor:
                return torch.tensor([values.get(name, default) for name in names], dtype=torch.float32, device=device)

            cache[(device, len(names))] = TaskTables(
                names, column(self.full_mask, 0.0), column({n: self.dropout_of(n) for n in names}, self.p_uncond),
                column(self.task_weights, 1.0))
        return cache[(device, len(names))]


@dataclass
class TaskTables:
    """Per-task settings of a `MaskingConfig` on one device, row `task_index(name)` for each registered task."""

    names: list[str]
    full_mask: torch.Tensor  # (T,) P(a target is masked whole)
    dropout: torch.Tensor  # (T,) P(the condition is dropped)
    weight: torch.Tensor  # (T,) loss weight


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
    """The loss of a batch; every field stays on the device (read them back only when logging)."""

    loss: torch.Tensor  # scalar to backpropagate
    task_loss: torch.Tensor  # (T,) per task: sum of the 1/p-weighted cross entropies of its rows
    task_targets: torch.Tensor  # (T,) per task: target tokens of its rows
    num_masked: torch.Tensor  # scalar: masked tokens in the batch
    num_targets: torch.Tensor  # scalar: target tokens in the batch
    task_names: list[str] = field(default_factory=list)  # row t of the per-task tensors is task_names[t]

    def per_task(self) -> dict[str, float]:
        """Each task present in the batch: its loss normalised by its own target tokens (reads back to the host)."""
        losses, counts = self.task_loss.tolist(), self.task_targets.tolist()
        return {name: loss / count for name, loss, count in zip(self.task_names, losses, counts) if count}


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
    # Every modality of the vocabulary, present in this batch or not: asking which are present is a host read.
    for index, name in enumerate(vocab.modality_names):
        if name in ("special", "mask") or get_modality(name).continuous:
            continue
        where = target & (batch.modality_ids == index)
        p = torch.where(where, get_mask_schedule(config.schedule_of(name))(t_position), p)
    return p


def forward_process(batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
                    generator: torch.Generator | None = None) -> MaskedBatch:
    """Mask target tokens (and drop conditions) as the training objective prescribes: rows of a task with
    `target_copies` get that many differently masked copies of their target, a `full_mask` share of the copies is
    masked whole (the state decoding starts from), and a task's `condition_dropout` share of rows trains the
    unconditional branch."""
    device = batch.input_ids.device
    table = config.tables(device)
    copies = [config.target_copies.get(task, 1) for task in batch.tasks]
    if max(copies) > 1:
        batch = repeat_targets(batch, torch.tensor(copies))
    rows, columns = len(batch), max(copies)
    t = stratified_times(rows * columns, config.eps, generator, device).view(rows, columns)
    if config.full_mask:
        whole = table.full_mask[batch.task_ids]
        t = torch.where(torch.rand(t.shape, generator=generator, device=device) < whole[:, None], 1.0, t)
    p = mask_probabilities(batch, t, vocab, config)
    target = batch.target_mask
    masked = target & (torch.rand(p.shape, generator=generator, device=device) < p)
    has_condition = batch.condition_mask.any(dim=1)
    dropped = has_condition & (torch.rand(rows, generator=generator, device=device) < table.dropout[batch.task_ids])
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


_BIAS_CACHE: dict[tuple[UnifiedVocab, torch.device, torch.dtype], torch.Tensor] = {}


def modality_logit_bias(vocab: UnifiedVocab, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(number of modality indices, V): 0 where a target of that modality may take the id, -inf elsewhere (a padded
    modality, text, may also end with <eos> and <pad>). The special and mask rows allow everything but [MASK].
    Made once per vocabulary, device and dtype (do not modify the returned tensor)."""
    key = (vocab, torch.device(device or "cpu"), dtype)
    if key not in _BIAS_CACHE:
        _BIAS_CACHE[key] = _logit_bias(vocab, key[1], dtype)
    return _BIAS_CACHE[key]


def _logit_bias(vocab: UnifiedVocab, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    bias = torch.zeros(len(vocab.modality_names), vocab.size, dtype=dtype, device=device)
    bias[:, vocab.mask_id] = float("-inf")
    for index, name in enumerate(vocab.modality_names):
        if name in ("special", "mask"):
            continue
        extra = ("eos", "pad") if get_modality(name).padded else ()
        bias[index] = torch.where(vocab.allowed_mask(name, extra, device=device), 0.0, float("-inf"))
    return bias


def ordinal_cross_entropy(logits: torch.Tensor, codes: torch.Tensor, sigma: float) -> torch.Tensor:
    """(...,) cross entropy of logits (..., K) over ordered codes against a Gaussian around each true code (HL-Gauss):
    a near miss costs little, so ordered codes such as action bins learn like a regression, from fewer samples."""
    grid = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
    target = torch.softmax(-(grid - codes[..., None].float()) ** 2 / (2 * sigma ** 2), dim=-1)
    return -(target * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def diffusion_loss(logits: torch.Tensor, masked_batch: MaskedBatch, vocab: UnifiedVocab,
                   task_weights: dict[str, float] | torch.Tensor | None = None,
                   ordinal_sigma: dict[str, float] | None = None) -> DiffusionLoss:
    """ELBO-weighted cross entropy on masked positions, normalised by the number of target tokens.

    Logits are restricted to the position's modality (as decoding does), so no probability is spent on ids a
    target can never take. A modality in `ordinal_sigma` (its codes ordered, as action bins) is scored against a
    Gaussian over neighbouring codes instead of its one true code (`ordinal_cross_entropy`). Every position is
    scored and the unmasked ones weigh 0, so nothing here depends on how many positions are masked. `task_weights`
    by task name, or a (T,) tensor by task index (`MaskingConfig.tables(device).weight`, no host copy).
    """
    batch = masked_batch.clean
    target, masked = batch.target_mask, masked_batch.masked
    bias = modality_logit_bias(vocab, device=logits.device)
    restricted = logits.float() + bias[batch.modality_ids]  # (B, L, V)
    ce = F.cross_entropy(restricted.flatten(0, 1), batch.input_ids.flatten(), reduction="none").view(masked.shape)
    for name, sigma in (ordinal_sigma or {}).items():
        if not vocab.has(name):
            continue
        start, stop = vocab.range_of(name)
        ordinal = ordinal_cross_entropy(logits[..., start:stop], (batch.input_ids - start).clamp(0, stop - start - 1),
                                        sigma)
        ce = torch.where(batch.modality_ids == vocab.modality_index(name), ordinal, ce)
    # Unmasked positions may hold ids their row's restriction forbids (an infinite cross entropy): select, never
    # multiply, so they cannot turn the sum into NaN.
    weighted = torch.where(masked, ce / masked_batch.p_mask.clamp(min=1e-12), 0.0)  # (B, L)
    names = list(tasks())
    if isinstance(task_weights, dict):
        task_weights = torch.tensor([task_weights.get(name, 1.0) for name in names], device=logits.device)
    per_row = weighted.sum(dim=1)  # (B,)
    targets_per_row = target.sum(dim=1)
    num_targets = targets_per_row.sum()
    total = (per_row * task_weights[batch.task_ids]).sum() if task_weights is not None else per_row.sum()
    loss = total / num_targets.clamp(min=1)
    zeros = torch.zeros(len(names), dtype=torch.float32, device=logits.device)
    task_loss = zeros.index_add(0, batch.task_ids, per_row.detach())
    task_targets = zeros.index_add(0, batch.task_ids, targets_per_row.float())
    return DiffusionLoss(loss, task_loss, task_targets, masked.sum(), num_targets, names)


def diffusion_step(model: Any, batch: SequenceBatch, vocab: UnifiedVocab, config: MaskingConfig,
                   generator: torch.Generator | None = None, autocast: torch.dtype | None = None) -> DiffusionLoss:
    """Forward process, model, ELBO loss on one batch (no backward); `model` is the network or anything that calls
    it the same way (a distributed wrapper)."""
    noisy = forward_process(batch, vocab, config, generator)
    device = noisy.input_ids.device
    with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
        logits = model(noisy.input_ids, segment_ids=noisy.clean.segment_ids, position_ids=noisy.clean.position_ids,
                       features=noisy.clean.features, slot_ids=noisy.clean.slot_ids).logits
    return diffusion_loss(logits, noisy, vocab, config.tables(device).weight, config.ordinal_sigma)
