"""Task sequence templates and batch collation.

Every task is laid out as `[condition segment][target segment]`:

    t2i  <t2i> prompt... <soi>          | image codes... <eoi>
    i2t  <i2t> <soi> image codes <eoi>  | caption... <eos> <pad>...
    vla  <vla> <soi> image codes <eoi> instruction... [<sop> state codes <eop>] | <soa> action codes... <eoa>
    lm   (no condition)                 | text... <eos> <pad>...

Per position we keep:
- `segment_ids`: 0 padding, 1 condition, 2 target. The model derives its attention pattern from these
  (the condition attends only to itself, the target to everything; see `unimask.model`).
- `content_mask`: payload tokens. In the target these are the positions the forward process may mask and the loss
  is computed on; in the condition they are what condition dropout replaces by `[MASK]`. Task tokens and
  delimiters are structure: never masked, never dropped.
- `modality_ids`: the `Modality` of the payload at each position (text targets' `<eos>`/`<pad>` count as text),
  which picks the masking schedule at training time and the allowed ids at decoding time.

Text targets always have the fixed length `caption_length`: the caption, one `<eos>`, then `<pad>` up to the length,
so the model learns where text ends. Passing `None` as a target gives an all-`[MASK]` target for inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch

from .vocab import Modality, UnifiedVocab

PAD_SEGMENT, CONDITION, TARGET = 0, 1, 2


class SequenceError(ValueError):
    """A sequence cannot be built from the given parts."""


@dataclass
class TokenSequence:
    input_ids: torch.Tensor  # (L,) long
    segment_ids: torch.Tensor  # (L,) long: 0 pad, 1 condition, 2 target
    content_mask: torch.Tensor  # (L,) bool: payload (maskable in the target, droppable in the condition)
    modality_ids: torch.Tensor  # (L,) long: Modality of each position
    task: str

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def target_slice(self) -> slice:
        positions = (self.segment_ids == TARGET).nonzero().flatten()
        return slice(int(positions[0]), int(positions[-1]) + 1)


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (B, L) long
    segment_ids: torch.Tensor  # (B, L) long
    content_mask: torch.Tensor  # (B, L) bool
    modality_ids: torch.Tensor  # (B, L) long
    position_ids: torch.Tensor  # (B, L) long: 0.. over non-pad tokens, so left padding does not shift positions
    tasks: list[str] = field(default_factory=list)

    @property
    def target_mask(self) -> torch.Tensor:
        """(B, L) bool: the target payload, i.e. where the model writes and the loss is taken."""
        return self.content_mask & (self.segment_ids == TARGET)

    @property
    def condition_mask(self) -> torch.Tensor:
        """(B, L) bool: the condition payload, what condition dropout and the unconditional branch replace."""
        return self.content_mask & (self.segment_ids == CONDITION)

    def to(self, device: torch.device | str) -> "SequenceBatch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return SequenceBatch(**moved)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class _Parts:
    """Accumulates (ids, segment, content, modality) runs into one TokenSequence."""

    def __init__(self) -> None:
        self.ids: list[torch.Tensor] = []
        self.segments: list[int] = []
        self.contents: list[bool] = []
        self.modalities: list[int] = []
        self.lengths: list[int] = []

    def add(self, ids: torch.Tensor, segment: int, content: bool, modality: Modality) -> None:
        ids = ids.flatten().long()
        self.ids.append(ids)
        n = int(ids.numel())
        self.lengths.append(n)
        self.segments.append(segment)
        self.contents.append(content)
        self.modalities.append(int(modality))

    def build(self, task: str) -> TokenSequence:
        lengths = torch.tensor(self.lengths)
        return TokenSequence(
            input_ids=torch.cat(self.ids),
            segment_ids=torch.repeat_interleave(torch.tensor(self.segments), lengths),
            content_mask=torch.repeat_interleave(torch.tensor(self.contents), lengths),
            modality_ids=torch.repeat_interleave(torch.tensor(self.modalities), lengths),
            task=task,
        )


class SequenceBuilder:
    """Builds the task templates above from token ids of each modality (ids are tokenizer codes, not vocab ids)."""

    def __init__(self, vocab: UnifiedVocab, caption_length: int = 32, image_tokens: int | None = None,
                 action_tokens: int | None = None, max_condition_text: int = 64):
        if caption_length < 2:
            raise SequenceError(f"`caption_length` must be >= 2 (one token and <eos>), got {caption_length}.")
        self.vocab = vocab
        self.caption_length = caption_length  # fixed target length of captions / lm text, incl. <eos> and <pad>
        self.image_tokens = image_tokens  # codes per image; needed to build an all-[MASK] image target
        self.action_tokens = action_tokens  # codes per action chunk; needed to build an all-[MASK] action target
        self.max_condition_text = max_condition_text  # prompts/instructions longer than this raise

    def _special(self, name: str) -> torch.Tensor:
        return torch.tensor([self.vocab.special_id(name)])

    def _masks(self, n: int | None, what: str) -> torch.Tensor:
        if n is None:
            raise SequenceError(f"building an all-[MASK] {what} target needs `{what}_tokens` on the SequenceBuilder.")
        return torch.full((n,), self.vocab.mask_id)

    def _condition_text(self, ids: Sequence[int] | torch.Tensor, what: str) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise SequenceError(f"the {what} is empty; give at least one text token.")
        if ids.numel() > self.max_condition_text:
            raise SequenceError(
                f"the {what} has {ids.numel()} tokens, more than max_condition_text={self.max_condition_text}; "
                "shorten it or raise the limit."
            )
        return self.vocab.text_to_id(ids)

    def _text_target(self, ids: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
        if ids is None:
            return torch.full((self.caption_length,), self.vocab.mask_id)
        ids = self.vocab.text_to_id(torch.as_tensor(ids, dtype=torch.long).flatten())
        if ids.numel() > self.caption_length - 1:
            raise SequenceError(
                f"text target has {ids.numel()} tokens; at most caption_length - 1 = {self.caption_length - 1} fit "
                "before <eos>. Raise `caption_length` or shorten the text."
            )
        padding = torch.full((self.caption_length - ids.numel() - 1,), self.vocab.pad_id)
        return torch.cat([ids, torch.tensor([self.vocab.eos_id]), padding])

    def _image(self, codes: Any) -> torch.Tensor:
        codes = torch.as_tensor(codes, dtype=torch.long).flatten()
        if self.image_tokens is not None and codes.numel() != self.image_tokens:
            raise SequenceError(f"expected {self.image_tokens} image codes, got {codes.numel()}.")
        return self.vocab.image_to_id(codes)

    def _actions(self, codes: Any) -> torch.Tensor:
        codes = torch.as_tensor(codes, dtype=torch.long).flatten()
        if self.action_tokens is not None and codes.numel() != self.action_tokens:
            raise SequenceError(f"expected {self.action_tokens} action codes, got {codes.numel()}.")
        return self.vocab.action_to_id(codes)

    def t2i(self, prompt_ids: Sequence[int] | torch.Tensor, image_codes: Any = None) -> TokenSequence:
        p = _Parts()
        p.add(self._special("t2i"), CONDITION, False, Modality.SPECIAL)
        p.add(self._condition_text(prompt_ids, "prompt"), CONDITION, True, Modality.TEXT)
        p.add(self._special("soi"), CONDITION, False, Modality.SPECIAL)
        image = self._masks(self.image_tokens, "image") if image_codes is None else self._image(image_codes)
        p.add(image, TARGET, True, Modality.IMAGE)
        p.add(self._special("eoi"), TARGET, False, Modality.SPECIAL)
        return p.build("t2i")

    def i2t(self, image_codes: Any, caption_ids: Sequence[int] | torch.Tensor | None = None) -> TokenSequence:
        p = _Parts()
        p.add(self._special("i2t"), CONDITION, False, Modality.SPECIAL)
        p.add(self._special("soi"), CONDITION, False, Modality.SPECIAL)
        p.add(self._image(image_codes), CONDITION, True, Modality.IMAGE)
        p.add(self._special("eoi"), CONDITION, False, Modality.SPECIAL)
        p.add(self._text_target(caption_ids), TARGET, True, Modality.TEXT)
        return p.build("i2t")

    def vla(self, image_codes: Any, instruction_ids: Sequence[int] | torch.Tensor, action_codes: Any = None,
            state_codes: Any = None) -> TokenSequence:
        p = _Parts()
        p.add(self._special("vla"), CONDITION, False, Modality.SPECIAL)
        p.add(self._special("soi"), CONDITION, False, Modality.SPECIAL)
        p.add(self._image(image_codes), CONDITION, True, Modality.IMAGE)
        p.add(self._special("eoi"), CONDITION, False, Modality.SPECIAL)
        p.add(self._condition_text(instruction_ids, "instruction"), CONDITION, True, Modality.TEXT)
        if state_codes is not None:
            p.add(self._special("sop"), CONDITION, False, Modality.SPECIAL)
            p.add(self.vocab.state_to_id(torch.as_tensor(state_codes).flatten()), CONDITION, True, Modality.STATE)
            p.add(self._special("eop"), CONDITION, False, Modality.SPECIAL)
        p.add(self._special("soa"), TARGET, False, Modality.SPECIAL)
        actions = self._masks(self.action_tokens, "action") if action_codes is None else self._actions(action_codes)
        p.add(actions, TARGET, True, Modality.ACTION)
        p.add(self._special("eoa"), TARGET, False, Modality.SPECIAL)
        return p.build("vla")

    def lm(self, text_ids: Sequence[int] | torch.Tensor | None = None) -> TokenSequence:
        p = _Parts()
        p.add(self._special("lm"), TARGET, False, Modality.SPECIAL)
        p.add(self._text_target(text_ids), TARGET, True, Modality.TEXT)
        return p.build("lm")


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
    modality_ids = torch.full((batch, length), int(Modality.SPECIAL), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq)
        cols = slice(0, n) if padding_side == "right" else slice(length - n, length)
        input_ids[row, cols] = seq.input_ids
        segment_ids[row, cols] = seq.segment_ids
        content_mask[row, cols] = seq.content_mask
        modality_ids[row, cols] = seq.modality_ids
    not_pad = segment_ids != PAD_SEGMENT
    position_ids = (not_pad.long().cumsum(-1) - 1).clamp(min=0)
    return SequenceBatch(input_ids, segment_ids, content_mask, modality_ids, position_ids,
                         [s.task for s in sequences])
