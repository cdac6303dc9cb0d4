"""The shared token space: one contiguous id range per modality.

Layout, in id order (the order never changes; sizes come from the tokenizers):

    text     [0, text_size)                   the text tokenizer's own ids
    special  [text_size, +len(SPECIAL_TOKENS)) task tokens, delimiters, <eos>, <pad>; also known to the text tokenizer
    image    image_codebook_size ids          VQ codes
    action   action_vocab_size ids            action bins or FAST tokens
    state    state_bins ids                   proprioceptive state bins (0 when no state is used)
    mask     one id                           [MASK], the absorbing state of the diffusion

The special range sits right after the text range because that is where `tokenizer.add_tokens` puts new tokens, so
the text tokenizer and the vocabulary agree on every special id; `validate_text_tokenizer` checks it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_text

VOCAB_FILE = "vocab.json"

# Special token strings, in id order. Written `<|name|>` so they never collide with a tokenizer's own `<pad>` etc.
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
TASKS: tuple[str, ...] = ("t2i", "i2t", "vla", "lm")


class Modality(enum.IntEnum):
    TEXT = 0
    SPECIAL = 1
    IMAGE = 2
    ACTION = 3
    STATE = 4
    MASK = 5


class VocabError(ValueError):
    """The vocabulary layout is invalid, or disagrees with a tokenizer."""


def special_name(token: str) -> str:
    """`<|eos|>` -> `eos`."""
    return token[2:-2]


@dataclass(frozen=True)
class UnifiedVocab:
    text_size: int  # ids [0, text_size) are the text tokenizer's own tokens
    image_codebook_size: int  # number of VQ codes (0 if the model reads/writes no images)
    action_vocab_size: int  # number of action tokens: bins or the FAST BPE vocabulary (0 if none)
    state_bins: int = 0  # number of proprioceptive state bins (0 if the state is not tokenized)
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS  # saved so a checkpoint keeps its own list

    def __post_init__(self) -> None:
        object.__setattr__(self, "special_tokens", tuple(self.special_tokens))
        for name in ("text_size", "image_codebook_size", "action_vocab_size", "state_bins"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise VocabError(f"`{name}` must be an integer >= 0, got {value!r}.")
        if self.text_size == 0:
            raise VocabError("`text_size` must be > 0: every task uses text tokens (prompts, captions, instructions).")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise VocabError(f"`special_tokens` has duplicates: {self.special_tokens}.")
        missing = [t for t in SPECIAL_TOKENS if t not in self.special_tokens]
        if missing:
            raise VocabError(f"`special_tokens` lacks {missing}; every layout needs all of {SPECIAL_TOKENS}.")

    # ----- ranges -------------------------------------------------------------------------------------------------
    @property
    def special_start(self) -> int:
        return self.text_size

    @property
    def image_start(self) -> int:
        return self.special_start + len(self.special_tokens)

    @property
    def action_start(self) -> int:
        return self.image_start + self.image_codebook_size

    @property
    def state_start(self) -> int:
        return self.action_start + self.action_vocab_size

    @property
    def mask_id(self) -> int:
        return self.state_start + self.state_bins

    @property
    def size(self) -> int:
        """Total number of ids, i.e. the model's embedding rows."""
        return self.mask_id + 1

    def __len__(self) -> int:
        return self.size

    def range_of(self, modality: Modality) -> tuple[int, int]:
        """Half-open id range `[start, stop)` of a modality."""
        modality = Modality(modality)
        bounds = {
            Modality.TEXT: (0, self.text_size),
            Modality.SPECIAL: (self.special_start, self.image_start),
            Modality.IMAGE: (self.image_start, self.action_start),
            Modality.ACTION: (self.action_start, self.state_start),
            Modality.STATE: (self.state_start, self.mask_id),
            Modality.MASK: (self.mask_id, self.size),
        }
        return bounds[modality]

    # ----- special tokens -----------------------------------------------------------------------------------------
    def special_id(self, name: str) -> int:
        """Id of a special token given as `eos` or `<|eos|>`."""
        token = name if name.startswith("<|") else f"<|{name}|>"
        try:
            return self.special_start + self.special_tokens.index(token)
        except ValueError:
            known = ", ".join(special_name(t) for t in self.special_tokens)
            raise VocabError(f"unknown special token {name!r}; known: {known}.") from None

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def eos_id(self) -> int:
        return self.special_id("eos")

    def task_id(self, task: str) -> int:
        if task not in TASKS:
            raise VocabError(f"unknown task {task!r}; tasks are {TASKS}.")
        return self.special_id(task)

    # ----- code <-> id --------------------------------------------------------------------------------------------
    def _to_id(self, codes: Any, modality: Modality, what: str) -> torch.Tensor:
        codes = torch.as_tensor(codes, dtype=torch.long)
        start, stop = self.range_of(modality)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= stop - start):
            raise VocabError(
                f"{what} codes must lie in [0, {stop - start}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]; does the tokenizer match this vocabulary?"
            )
        return codes + start

    def _from_id(self, ids: Any, modality: Modality, what: str) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        start, stop = self.range_of(modality)
        if ids.numel() and (int(ids.min()) < start or int(ids.max()) >= stop):
            raise VocabError(
                f"ids must be {what} ids in [{start}, {stop}), got values in [{int(ids.min())}, {int(ids.max())}]."
            )
        return ids - start

    def image_to_id(self, codes: Any) -> torch.Tensor:
        return self._to_id(codes, Modality.IMAGE, "image")

    def id_to_image(self, ids: Any) -> torch.Tensor:
        return self._from_id(ids, Modality.IMAGE, "image")

    def action_to_id(self, codes: Any) -> torch.Tensor:
        return self._to_id(codes, Modality.ACTION, "action")

    def id_to_action(self, ids: Any) -> torch.Tensor:
        return self._from_id(ids, Modality.ACTION, "action")

    def state_to_id(self, codes: Any) -> torch.Tensor:
        return self._to_id(codes, Modality.STATE, "state")

    def id_to_state(self, ids: Any) -> torch.Tensor:
        return self._from_id(ids, Modality.STATE, "state")

    def text_to_id(self, ids: Any) -> torch.Tensor:
        """Text tokenizer ids are vocabulary ids; this only checks the range."""
        return self._to_id(ids, Modality.TEXT, "text")

    def modality_of(self, ids: Any) -> torch.Tensor:
        """Modality (as `Modality` int values) of every id; raises for ids outside the vocabulary."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        self.check_ids(ids)
        boundaries = torch.tensor(
            [self.special_start, self.image_start, self.action_start, self.state_start, self.mask_id],
            device=ids.device,
        )
        return torch.bucketize(ids, boundaries, right=True)

    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.size):
            raise VocabError(
                f"token ids must lie in [0, {self.size}), got values in [{int(ids.min())}, {int(ids.max())}]."
            )

    def allowed_mask(self, modality: Modality, device: torch.device | str | None = None) -> torch.Tensor:
        """Bool [size]: the ids a target of `modality` may be decoded to (text also allows `<eos>` and `<pad>`)."""
        allowed = torch.zeros(self.size, dtype=torch.bool, device=device)
        start, stop = self.range_of(modality)
        if stop == start:
            raise VocabError(f"this vocabulary has no {Modality(modality).name.lower()} ids to decode to.")
        allowed[start:stop] = True
        if Modality(modality) == Modality.TEXT:
            allowed[self.eos_id] = True
            allowed[self.pad_id] = True
        return allowed

    # ----- tokenizer agreement ------------------------------------------------------------------------------------
    def validate_text_tokenizer(self, tokenizer: Any) -> None:
        """Raise `VocabError` unless the tokenizer's size and special ids match this layout."""
        expected = self.text_size + len(self.special_tokens)
        if len(tokenizer) != expected:
            raise VocabError(
                f"the text tokenizer has {len(tokenizer)} tokens but this vocabulary expects {expected} "
                f"({self.text_size} text + {len(self.special_tokens)} special); the checkpoint and tokenizer were "
                "not made together. Load the tokenizer saved with this checkpoint."
            )
        for token in self.special_tokens:
            got = tokenizer.convert_tokens_to_ids(token)
            want = self.special_id(token)
            if got != want:
                raise VocabError(
                    f"special token {token} has id {got} in the text tokenizer but {want} in the vocabulary; "
                    "decoding would map it to the wrong token. Rebuild the tokenizer with "
                    "unimask.tokenizers.text.add_special_tokens."
                )

    def validate_sizes(self, *, image_codebook_size: int | None = None, action_vocab_size: int | None = None,
                       state_bins: int | None = None) -> None:
        """Raise `VocabError` if an image/action/state tokenizer's size disagrees with this layout."""
        for name, got in (("image_codebook_size", image_codebook_size), ("action_vocab_size", action_vocab_size),
                          ("state_bins", state_bins)):
            want = getattr(self, name)
            if got is not None and got != want:
                raise VocabError(
                    f"{name} is {want} in the vocabulary but the tokenizer has {got}; the checkpoint and this "
                    "tokenizer were not made together."
                )

    # ----- persistence --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["special_tokens"] = list(self.special_tokens)
        return data

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "UnifiedVocab":
        path = Path(directory)
        path = path / VOCAB_FILE if path.is_dir() else path
        if not path.is_file():
            raise VocabError(f"no {VOCAB_FILE} at {path}; is this a unimask checkpoint folder?")
        data = json.loads(path.read_text())
        known = {"text_size", "image_codebook_size", "action_vocab_size", "state_bins", "special_tokens"}
        unknown = set(data) - known
        if unknown:
            raise VocabError(f"{path} has unknown keys {sorted(unknown)}; it was written by another version.")
        return cls(**data)
