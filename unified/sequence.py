"""Token sequences built from task templates, and batch collation.

A task template (`unimask.modality.TaskTemplate`, registered in `unimask.registry`) is laid out as

    [<task>] [open] condition payload [close] ... | [open] target payload [close]

for example (the built-in templates):

    t2i  <t2i> prompt...                                      | <soi> image codes... <eoi>
    i2t  <i2t> <soi> image codes <eoi>                        | caption... <eos> <pad>...
    vla  <vla> <soi> image codes <eoi> instruction... [<sop> state codes <eop>] | <soa> action codes... <eoa>
    lm   (no condition)                                       | <lm> text... <eos> <pad>...

Per position we keep:
- `segment_ids`: 0 padding, 1 condition, 2 target. The model derives its attention pattern from these
  (the condition attends only to itself, the target to everything; see `unimask.model`).
- `content_mask`: payload tokens. In the target these are the positions the forward process may mask and the loss
  is computed on; in the condition they are what condition dropout replaces by `[MASK]`. Task tokens and
  delimiters are structure: never masked, never dropped.
- `modality_ids`: the modality index (`UnifiedVocab.modality_index`) of the payload at each position (a padded text
  target's `<eos>`/`<pad>` count as text), which picks the masking schedule at training time and the allowed ids
  at decoding time.

A padded modality's target (text) always has the fixed length `caption_length`: the payload, one `<eos>`, then
`<pad>` up to the length, so the model learns where text ends. A target given as `None` is all `[MASK]`
(inference). A continuous modality's segment holds placeholder ids;
its values travel in `features` and the model embeds them with its encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import torch

from .errors import InputError
from .modality import TaskTemplate
from .vocab import UnifiedVocab

PAD_SEGMENT, CONDITION, TARGET = 0, 1, 2


class SequenceError(InputError):
    """A sequence cannot be built from the given parts."""


@dataclass
class TokenSequence:
    input_ids: torch.Tensor  # (L,) long
    segment_ids: torch.Tensor  # (L,) long: 0 pad, 1 condition, 2 target
    content_mask: torch.Tensor  # (L,) bool: payload (maskable in the target, droppable in the condition)
    modality_ids: torch.Tensor  # (L,) long: modality index of each position
    task: str
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # continuous inputs, e.g. pixels (3, H, W)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (B, L) long
    segment_ids: torch.Tensor  # (B, L) long
    content_mask: torch.Tensor  # (B, L) bool
    modality_ids: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long: 0.. over non-pad tokens, so left padding does not shift positions
    tasks: list[str] = field(default_factory=list)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, ...) per continuous modality
    # (B,) long: each row's task as `unimask.registry.task_index`, so per-task settings are looked up on the device
    # without building a tensor from `tasks` (a host-to-device copy, and a synchronisation, every step).
    task_ids: torch.Tensor | None = None
    slot_ids: torch.Tensor | None = None  # (B, L) long: `payload_slots`, each payload token's place in its segment

    def __post_init__(self) -> None:
        if self.task_ids is None:
            from .registry import task_index

            self.task_ids = torch.tensor([task_index(task) for task in self.tasks], dtype=torch.long,
                                         device=self.input_ids.device)
        if self.slot_ids is None:
            self.slot_ids = payload_slots(self.content_mask, self.segment_ids, self.modality_ids)

    @property
    def target_mask(self) -> torch.Tensor:
        """(B, L) bool: the target payload (of every target copy), i.e. where the model writes and the loss is taken."""
        return self.content_mask & (self.segment_ids >= TARGET)

    @property
    def condition_mask(self) -> torch.Tensor:
        """(B, L) bool: the condition payload, what condition dropout and the unconditional branch replace."""
        return self.content_mask & (self.segment_ids == CONDITION)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "SequenceBatch":
        """The batch on `device`; `non_blocking` copies from pinned memory without waiting for the device."""
        return self._map(lambda value: value.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "SequenceBatch":
        """The batch in page-locked memory (the DataLoader calls this with `pin_memory=True`)."""
        return self._map(lambda value: value.pin_memory())

    def _map(self, fn) -> "SequenceBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = fn(value)
        moved["features"] = {k: fn(v) for k, v in self.features.items()}
        return SequenceBatch(**moved)

    def repeat(self, times: int) -> "SequenceBatch":
        """Every row `times` times in a row (complementary masking, guidance branches)."""
        rows = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in rows.items():
            if isinstance(value, torch.Tensor):
                rows[name] = value.repeat(times, *([1] * (value.dim() - 1)))
        rows["tasks"] = self.tasks * times
        rows["features"] = {k: v.repeat(times, *([1] * (v.dim() - 1))) for k, v in self.features.items()}
        return SequenceBatch(**rows)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class _Parts:
    """Accumulates (ids, segment, content, modality) runs into one TokenSequence."""

    def __init__(self) -> None:
        self.ids: list[torch.Tensor] = []
        self.runs: list[tuple[int, bool, int, int]] = []  # (segment, content, modality index, length)

    def add(self, ids: torch.Tensor, segment: int, content: bool, modality: int) -> None:
        ids = ids.flatten().long()
        self.ids.append(ids)
        self.runs.append((segment, content, modality, int(ids.numel())))

    def build(self, task: str, features: dict[str, torch.Tensor]) -> TokenSequence:
        lengths = torch.tensor([run[3] for run in self.runs])

        def spread(i: int) -> torch.Tensor:
            return torch.repeat_interleave(torch.tensor([run[i] for run in self.runs]), lengths)

        return TokenSequence(torch.cat(self.ids), spread(0), spread(1), spread(2), task, features)


class SequenceBuilder:
    """Builds task templates from codes of each segment's modality (tokenizer codes, not vocabulary ids).

    `lengths[name]` is the fixed number of codes of a modality's segment (image codes, action codes, state codes,
    pixel tokens); a padded modality (text) has `caption_length` as a target and at most `max_condition_text`
    tokens as a condition.
    """

    def __init__(self, vocab: UnifiedVocab, modalities: Mapping[str, Any], lengths: Mapping[str, int],
                 caption_length: int = 32, max_condition_text: int = 64):
        if caption_length < 2:
            raise SequenceError(f"`caption_length` must be >= 2 (one token and <eos>), got {caption_length}.")
        self.vocab = vocab
        self.modalities = dict(modalities)  # name -> Modality (the registered objects this builder may meet)
        self.lengths = dict(lengths)
        self.caption_length = caption_length
        self.max_condition_text = max_condition_text

    def _special(self, name: str) -> torch.Tensor:
        return torch.tensor([self.vocab.special_id(name)])

    def _payload(self, segment_field: str, name: str, codes: Any, target: bool) -> torch.Tensor:
        modality = self.modalities[name]
        if codes is None:
            if not target:
                raise SequenceError(f"the condition {segment_field!r} is missing.")
            length = self.caption_length if modality.padded else self.length(name)
            return torch.full((length,), self.vocab.mask_id)
        codes = torch.as_tensor(codes, dtype=torch.long).flatten()
        if modality.padded and target:
            if codes.numel() > self.caption_length - 1:
                raise SequenceError(f"text target has {codes.numel()} tokens; at most caption_length - 1 = "
                                    f"{self.caption_length - 1} fit before <eos>. Raise `caption_length` or shorten "
                                    "the text.")
            padding = torch.full((self.caption_length - codes.numel() - 1,), self.vocab.pad_id)
            return torch.cat([self.vocab.to_id(self._ids_of(name), codes), torch.tensor([self.vocab.eos_id]), padding])
        if modality.padded:
            if codes.numel() == 0:
                raise SequenceError(f"the {segment_field} is empty; give at least one token.")
            if codes.numel() > self.max_condition_text:
                raise SequenceError(f"the {segment_field} has {codes.numel()} tokens, more than max_condition_text="
                                    f"{self.max_condition_text}; shorten it or raise the limit.")
        elif codes.numel() != self.length(name):
            raise SequenceError(f"expected {self.length(name)} {name} codes for {segment_field!r}, got "
                                f"{codes.numel()}.")
        return self.vocab.to_id(self._ids_of(name), codes)

    def _ids_of(self, name: str) -> str:
        """The vocabulary range a payload of modality `name` takes (its own, or the one it shares)."""
        return self.modalities[name].shares or name

    def length(self, name: str) -> int:
        if name not in self.lengths:
            raise SequenceError(f"the builder knows no fixed length for {name!r} segments; it knows "
                                f"{sorted(self.lengths)}.")
        return self.lengths[name]

    def build(self, template: TaskTemplate, codes: Sequence[Any],
              features: dict[str, torch.Tensor] | None = None) -> TokenSequence:
        """One sequence; `codes` holds one entry per segment of the template (condition segments, then the targets):
        codes, None for an absent optional condition, or None for an all-[MASK] target."""
        segments = template.segments
        if len(codes) != len(segments):
            raise SequenceError(f"task {template.name!r} has {len(segments)} segments, got {len(codes)} code entries.")
        vocab = self.vocab
        p = _Parts()
        task_token = self._special(template.name)
        p.add(task_token, CONDITION if template.condition else TARGET, False, vocab.modality_index("special"))
        for segment, value in zip(segments, codes):
            target = segment in template.targets
            if value is None and segment.optional and not target:
                continue
            role = TARGET if target else CONDITION
            modality = self.modalities[segment.modality]
            delimiters = modality.delimiters or ()
            if delimiters:
                p.add(self._special(delimiters[0]), role, False, vocab.modality_index("special"))
            p.add(self._payload(segment.field, segment.modality, value, target), role, True,
                  vocab.modality_index(self._ids_of(segment.modality)))
            if delimiters:
                p.add(self._special(delimiters[1]), role, False, vocab.modality_index("special"))
        return p.build(template.name, dict(features or {}))


def payload_slots(content: torch.Tensor, segments: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
    """(B, L) long: 1, 2, ... along each run of payload (one segment's codes of one modality), 0 elsewhere: the place
    of a token in its segment (the step and dimension of an action code, the cell of an image code), whatever comes
    before the segment. The model can embed it (`MaskedDiffusionConfig.segment_positions`)."""
    index = torch.arange(content.shape[1], device=content.device).expand_as(content)

    def before(values: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.cat([torch.full_like(values[:, :1], fill), values[:, :-1]], dim=1)

    starts = content & (~before(content.long(), 0).bool() | (segments != before(segments, -1))
                        | (modalities != before(modalities, -1)))
    run_start = torch.where(starts, index, 0).cummax(dim=1).values
    return torch.where(content, index - run_start + 1, 0)


def repeat_targets(batch: SequenceBatch, copies: torch.Tensor) -> SequenceBatch:
    """Each row with its target repeated `copies[row]` times after its condition (right-padded): copy j has segment id
    TARGET + j and the target's own position ids, so with prefix attention every copy is the one-target sequence
    (`attention_mask_from_segments`) and one condition pass supervises several maskings of the target."""
    rows = []
    for row in range(len(batch)):
        keep = batch.segment_ids[row] != PAD_SEGMENT
        condition = keep & (batch.segment_ids[row] == CONDITION)
        target = keep & (batch.segment_ids[row] == TARGET)
        parts = {name: [getattr(batch, name)[row][condition]] for name in ("input_ids", "segment_ids",
                                                                            "content_mask", "modality_ids",
                                                                            "position_ids")}
        for copy in range(int(copies[row])):
            for name in parts:
                value = getattr(batch, name)[row][target]
                parts[name].append(value + copy if name == "segment_ids" else value)
        rows.append({name: torch.cat(values) for name, values in parts.items()})
    length = max(len(r["input_ids"]) for r in rows)
    out = {}
    # Padding ids are never attended to nor scored: any valid id does, 0 (a text id) is one.
    for name, fill in (("input_ids", 0), ("segment_ids", PAD_SEGMENT), ("content_mask", False), ("modality_ids", 1),
                       ("position_ids", 0)):
        like = getattr(batch, name)
        out[name] = torch.stack([torch.cat([r[name], torch.full((length - len(r[name]),), fill, dtype=like.dtype,
                                                                device=like.device)]) for r in rows])
    return SequenceBatch(**out, tasks=list(batch.tasks), features=dict(batch.features), task_ids=batch.task_ids)


def collate(sequences: Sequence[TokenSequence], pad_id: int, padding_side: str = "right",
            pad_to_multiple_of: int | None = None) -> SequenceBatch:
    """Pad sequences into a batch. Right padding for training; left padding for generation, so every row's target
    ends at the same column and batched decoding can address targets by column."""
    if not sequences:
        raise SequenceError("cannot collate an empty list of sequences.")
    if padding_side not in ("left", "right"):
        raise SequenceError(f"`padding_side` must be 'left' or 'right', got {padding_side!r}.")
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = len(sequences)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    segment_ids = torch.full((batch, length), PAD_SEGMENT, dtype=torch.long)
    content_mask = torch.zeros((batch, length), dtype=torch.bool)
    modality_ids = torch.full((batch, length), 1, dtype=torch.long)  # padding counts as special
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, cols] = seq.input_ids
        segment_ids[row, cols] = seq.segment_ids
        content_mask[row, cols] = seq.content_mask
        modality_ids[row, cols] = seq.modality_ids
    not_pad = segment_ids != PAD_SEGMENT
    position_ids = (not_pad.long().cumsum(-1) - 1).clamp(min=0)
    features = {}
    for name in sorted({k for s in sequences for k in s.features}):
        # A row of another task layout has no such input: it gets zeros, which the model never reads (it embeds a
        # continuous input only at its placeholder positions, and that row has none).
        like = next(s.features[name] for s in sequences if name in s.features)
        features[name] = torch.stack([s.features.get(name, torch.zeros_like(like)) for s in sequences])
    return SequenceBatch(input_ids, segment_ids, content_mask, modality_ids, position_ids,
                         [s.task for s in sequences], features)


def attention_mask_from_segments(query_segments: torch.Tensor, key_segments: torch.Tensor,
                                 mode: str = "prefix") -> torch.Tensor:
    """Bool (B, Lq, Lk), True where a query may attend to a key.

    Keys at padding are never attended. In "prefix" mode a query sees the condition and its own segment: a condition
    query sees only condition keys, a target query the condition and the target. A row may carry several copies of
    its target (segments 2, 3, ...: differently masked copies trained against one condition pass); each copy sees
    the condition and itself only, so every copy is exactly the one-target sequence. Padding queries see every key
    so their softmax is defined (their outputs are ignored).
    """
    q = query_segments[:, :, None]
    k = key_segments[:, None, :]
    allowed = k != PAD_SEGMENT
    if mode == "prefix":
        allowed = allowed & ((k == CONDITION) | (q == k))
    elif bool((key_segments > TARGET).any()):
        raise ValueError("target copies (segments > 2) need attention='prefix': with full attention they would see "
                         "each other.")
    return allowed | (q == PAD_SEGMENT)


def segment_block_mask(query_segments: torch.Tensor, key_segments: torch.Tensor, mode: str = "prefix") -> Any:
    """The rule of `attention_mask_from_segments` as a flex-attention `BlockMask` (queries and keys of one batch)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if mode != "prefix" and bool((key_segments > TARGET).any()):
        raise ValueError("target copies (segments > 2) need attention='prefix': with full attention they would see "
                         "each other.")

    def allowed(b, h, q, k):
        query, key = query_segments[b, q], key_segments[b, k]
        visible = key != PAD_SEGMENT
        if mode == "prefix":
            visible = visible & ((key == CONDITION) | (query == key))
        return visible | (query == PAD_SEGMENT)

    rows, queries = query_segments.shape
    return create_block_mask(allowed, rows, None, queries, key_segments.shape[1], device=query_segments.device)
