"""What a modality is: the base class every kind of token payload subclasses, and the task-template data.

This module is in the leaf layer of the package: it imports only the other leaf modules (`errors`, `config`), so
`unimask.tokenizers` (which defines the built-in modalities beside their tokenizers) can import it without importing
the core. `unimask.registry` holds the
registered instances; everything else asks the registry and never lists modalities itself.

A modality says, in one place:
- its id range: `vocab_size(tokenizer)` ids, laid out by `UnifiedVocab` after the text and special ranges;
- its tokenizer: `load_tokenizer(dir)` (saved with `tokenizer.save_pretrained(dir)` in the bundle's
  `<name>_tokenizer/` folder), `encode(tokenizer, values)`, `decode(tokenizer, codes)`;
- its training mask schedule (`mask_schedule`, a `unimask.masking` name) and its decoding scheduler
  (`scheduler`, a `unimask.schedulers` name, with `scheduler_options`);
- the shard entries it reads (`raw_keys`, and `codes_key` for pre-tokenized codes) and how a value is read from
  them (`read`);
- how it is embedded: discrete codes through the embedding table, or (`continuous = True`) by an encoder inside the
  model, fed at placeholder positions;
- the lengths and shapes it needs (`sequence_settings`): each a `Setting` with a type, default, range and meaning,
  read as `sequence.<name>` from configs and bundles and reached as `settings.<name>` by its own methods.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .config import Setting
from .errors import InputError

# Special token strings, in id order (the vocabulary's special range starts with these; tasks may add more after).
# Written `<|name|>` so they never collide with a tokenizer's own `<pad>` etc.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>",
    "<|eos|>",
    "<|t2i|>",
    "<|i2t|>",
    "<|vla|>",
    "<|lm|>",
    "<|soi|>",
    "<|eoi|>",
    "<|soa|>",
    "<|eoa|>",
    "<|sop|>",
    "<|eop|>",
)


class VocabError(InputError):
    """The vocabulary layout is invalid, or disagrees with a tokenizer."""


class SampleError(Exception):
    """A shard sample that must be skipped; `reason` is one of the loader's skip reasons."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def special_token(name: str) -> str:
    """`eos` -> `<|eos|>` (a name already written `<|...|>` is returned as is)."""
    return name if name.startswith("<|") else f"<|{name}|>"


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_image(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] from PNG/JPEG (or any PIL-readable) bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class Modality:
    """Base class of a modality; subclass it, then `unimask.registry.register_modality(MyModality())`."""

    name: str = ""  # registry key; also the vocabulary range, the `tokenizers` config key and the bundle folder prefix
    raw_keys: tuple[str, ...] = ()  # shard entries holding the raw value, the first present one is read
    codes_key: str | None = None  # shard entry of pre-tokenized codes (written by `unimask data pretokenize`)
    mask_schedule: str = "linear"  # default training mask schedule of a target of this modality
    scheduler: str = "confidence"  # default decoding scheduler of a target of this modality
    scheduler_options: dict[str, Any] = {}  # default options of that scheduler
    delimiters: tuple[str, str] | None = None  # special tokens around a segment of this modality, e.g. ("soi", "eoi")
    padded: bool = False  # variable-length payload: a target is padded with <eos> then <pad> to a fixed length
    continuous: bool = False  # True: embedded by an encoder in the model at placeholder positions, not by codes
    choices: tuple[str, ...] = ()  # ways a data stream may pick among a sample's variants (text: paraphrases)
    sequence_settings: tuple[Setting, ...] = ()  # its `sequence.<name>` keys; names are unique across modalities
    # Another modality whose ids, tokenizer, mask schedule and scheduler this one uses: a second payload of the same
    # kind read from other shard entries (a future frame is an image: the same VQ codes, another field).
    shares: str | None = None

    # ----- tokenizer ------------------------------------------------------------------------------------------------
    def load_tokenizer(self, directory: Any) -> Any:
        raise NotImplementedError(f"modality {self.name!r} does not say how to load its tokenizer.")

    def vocab_size(self, tokenizer: Any) -> int:
        """Ids this modality takes in the shared vocabulary (a continuous modality takes one placeholder id)."""
        return 1 if self.continuous else int(tokenizer.vocab_size)

    def num_tokens(self, tokenizer: Any, settings: Any) -> int | None:
        """Codes per segment, or None when the length varies (text)."""
        return int(tokenizer.num_tokens)

    def tokenizer_for(self, encoder: dict[str, Any]) -> Any:
        """Continuous modalities: the input preparation matching a model config's encoder entry (`encoders[name]`)."""
        raise NotImplementedError(f"modality {self.name!r} is discrete: its tokenizer comes from a folder.")

    def encode(self, tokenizer: Any, values: Sequence[Any], settings: Any) -> list[np.ndarray]:
        """Codes [N] (int64, in [0, vocab_size)) of each value; one call per batch so encoders can batch. A
        continuous modality returns its encoder input per value instead (the model embeds it)."""
        return [np.asarray(tokenizer.encode(value), dtype=np.int64).reshape(-1) for value in values]

    def decode(self, tokenizer: Any, codes: np.ndarray, settings: Any) -> Any:
        """Outputs (what the pipeline returns) from codes [B, N]."""
        return tokenizer.decode(codes)

    # ----- shards ---------------------------------------------------------------------------------------------------
    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> Any:
        """The value of this modality in a raw shard sample (raises for undecodable bytes)."""
        key = next(k for k in self.raw_keys if k in raw)
        return decode_npy(raw[key])

    def read_codes(self, data: bytes) -> np.ndarray:
        """Pre-tokenized codes from their shard entry (`codes_key`): a flat int64 array."""
        return decode_npy(data).astype(np.int64).reshape(-1)

    def codes_entry(self, codes: Any) -> np.ndarray:
        """What pre-tokenizing stores for one value's codes (the smallest integer type that holds them)."""
        codes = np.asarray(codes)
        return codes.astype(np.int16 if codes.size == 0 or int(codes.max()) < 2**15 else np.int32)

    def check_settings(self, tokenizer: Any, settings: Any) -> None:
        """Raise `InputError` when the sequence settings disagree with this modality's tokenizer."""

    def check(self, value: Any, card: dict[str, Any]) -> None:
        """Raise `SampleError("bad_shape", ...)` when a value disagrees with the dataset card."""

    def dataset_mismatch(self, tokenizer: Any, card: dict[str, Any], settings: Any) -> str | None:
        """Why a dataset (its card) cannot train this model's tokenizer and settings, or None when it can."""
        return None

    def select(self, value: Any, how: str, rng: np.random.Generator) -> Any:
        """The variant of a read value a stream uses (`how` is one of `choices`); most modalities have one."""
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclass(frozen=True)
class Segment:
    """One run of payload in a task template."""

    field: str  # the name callers use for it: "prompt", "image", "caption", "instruction", "state", "action", ...
    modality: str  # the registered modality of its payload
    optional: bool = False  # a condition that may be absent (e.g. proprioceptive state)


@dataclass(frozen=True)
class TaskTemplate:
    """A task as data: `[<task>] [condition segments] | [extra targets] [target segment]`, each segment inside its
    modality's delimiters. The task token belongs to the condition (to the target when there is no condition).
    Extra targets are written in the same pass as the target and share its attention (e.g. the frame a robot will
    see k steps ahead beside its action chunk: the actions attend to the imagined frame while both are denoised)."""

    name: str  # also its special token `<|name|>`
    condition: tuple[Segment, ...]  # what the model reads, in order
    target: Segment  # what the model writes (the task's output)
    extra_targets: tuple[Segment, ...] = ()  # written beside the target, before it in the sequence

    @property
    def targets(self) -> tuple[Segment, ...]:
        return (*self.extra_targets, self.target)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return (*self.condition, *self.targets)

    def field(self, name: str) -> Segment:
        for segment in self.segments:
            if segment.field == name:
                return segment
        raise KeyError(f"task {self.name!r} has no field {name!r}; its fields are "
                       f"{[s.field for s in self.segments]}.")

    def replace_condition(self, modality: str, *replacements: str) -> "TaskTemplate":
        """The same task with each condition segment of `modality` replaced by segments of `replacements`, which read
        the same input (e.g. an image condition as VQ codes, as pixels for an encoder, or both)."""
        condition = tuple(Segment(s.field, other, s.optional) for s in self.condition
                          for other in ((s.modality,) if s.modality != modality else replacements))
        return TaskTemplate(self.name, condition, self.target, self.extra_targets)

    def with_extra_targets(self, *modalities: str) -> "TaskTemplate":
        """The same task also writing a segment of each of `modalities` beside its target (field = modality name)."""
        return TaskTemplate(self.name, self.condition, self.target,
                            (*self.extra_targets, *(Segment(name, name) for name in modalities)))
