"""The shared token space: one contiguous id range per modality.

Layout, in id order:

    text      [0, text_size)                the text tokenizer's own ids
    special   len(special_tokens) ids       task tokens, delimiters, <eos>, <pad>
    <name>    size ids, for each modality   in the order given (image codes, action codes, state bins, ...)
    mask      one id                        [MASK], the absorbing state of the diffusion

The special range starts right after the text range with `SPECIAL_TOKENS`, because that is where
`tokenizer.add_tokens` puts them, so the text tokenizer and the vocabulary agree on those ids
(`validate_text_tokenizer` checks it). Tokens a registered task adds (its task token, a new modality's delimiters)
follow them; the text tokenizer never needs to know those.

Every position of a sequence also carries a modality index (`modality_index(name)`): 0 text, 1 special, then the
modalities in vocabulary order, then mask. It picks the masking schedule at training time and the allowed ids when
decoding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .atomic import atomic_write_text, read_json
from .modality import SPECIAL_TOKENS, VocabError, special_token

VOCAB_FILE = "vocab.json"
VOCAB_FORMAT = "unimask-vocab/2"


@dataclass(frozen=True)
class UnifiedVocab:
    text_size: int  # ids [0, text_size) are the text tokenizer's own tokens
    modalities: tuple[tuple[str, int], ...] = ()  # (name, number of ids) of every other modality, in id order
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS  # saved so a checkpoint keeps its own list

    def __post_init__(self) -> None:
        modalities = self.modalities.items() if isinstance(self.modalities, Mapping) else self.modalities
        object.__setattr__(self, "modalities", tuple((str(n), s) for n, s in modalities))
        object.__setattr__(self, "special_tokens", tuple(self.special_tokens))
        if not isinstance(self.text_size, int) or isinstance(self.text_size, bool) or self.text_size < 1:
            raise VocabError(f"`text_size` must be an integer > 0 (every task uses text), got {self.text_size!r}.")
        names = [name for name, _ in self.modalities]
        reserved = {"text", "special", "mask"} & set(names)
        if reserved or len(set(names)) != len(names):
            raise VocabError(f"modality names must be unique and not text/special/mask, got {names}.")
        for name, size in self.modalities:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise VocabError(f"modality {name!r} must have an integer number of ids >= 1, got {size!r}.")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise VocabError(f"`special_tokens` has duplicates: {self.special_tokens}.")
        if self.special_tokens[:len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise VocabError(f"`special_tokens` must start with {SPECIAL_TOKENS}, the tokens every text tokenizer "
                             "carries at those ids.")
        starts, start = {}, self.text_size + len(self.special_tokens)
        for name, size in self.modalities:
            starts[name] = start
            start += size
        object.__setattr__(self, "_starts", starts)

    # ----- ranges -------------------------------------------------------------------------------------------------
    @property
    def special_start(self) -> int:
        return self.text_size

    @property
    def mask_id(self) -> int:
        return self.text_size + len(self.special_tokens) + sum(size for _, size in self.modalities)

    @property
    def size(self) -> int:
        """Total number of ids, i.e. the model's embedding rows."""
        return self.mask_id + 1

    def __len__(self) -> int:
        return self.size

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Every range in id order; a name's position is its modality index."""
        return ("text", "special", *(name for name, _ in self.modalities), "mask")

    def has(self, name: str) -> bool:
        return name in self.modality_names

    def modality_index(self, name: str) -> int:
        try:
            return self.modality_names.index(name)
        except ValueError:
            raise VocabError(f"this vocabulary has no {name!r} ids; it has {list(self.modality_names)}. Was the "
                             f"model trained with a {name} tokenizer?") from None

    def range_of(self, name: str) -> tuple[int, int]:
        """Half-open id range `[start, stop)` of a modality (or of "text", "special", "mask")."""
        if name == "text":
            return 0, self.text_size
        if name == "special":
            return self.special_start, self.special_start + len(self.special_tokens)
        if name == "mask":
            return self.mask_id, self.size
        self.modality_index(name)
        start = self._starts[name]  # type: ignore[attr-defined]
        return start, start + dict(self.modalities)[name]

    def size_of(self, name: str) -> int:
        start, stop = self.range_of(name)
        return stop - start

    # ----- special tokens -----------------------------------------------------------------------------------------
    def special_id(self, name: str) -> int:
        """Id of a special token given as `eos` or `<|eos|>`."""
        try:
            return self.special_start + self.special_tokens.index(special_token(name))
        except ValueError:
            known = ", ".join(t[2:-2] for t in self.special_tokens)
            raise VocabError(f"unknown special token {name!r}; known: {known}.") from None

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def eos_id(self) -> int:
        return self.special_id("eos")

    # ----- code <-> id --------------------------------------------------------------------------------------------
    def to_id(self, name: str, codes: Any) -> torch.Tensor:
        """Vocabulary ids of a modality's codes (text ids are vocabulary ids: only the range is checked)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        start, stop = self.range_of(name)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= stop - start):
            raise VocabError(f"{name} codes must lie in [0, {stop - start}), got values in "
                             f"[{int(codes.min())}, {int(codes.max())}]; does the tokenizer match this vocabulary?")
        return codes + start

    def from_id(self, name: str, ids: Any) -> torch.Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long)
        start, stop = self.range_of(name)
        if ids.numel() and (int(ids.min()) < start or int(ids.max()) >= stop):
            raise VocabError(f"ids must be {name} ids in [{start}, {stop}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}].")
        return ids - start

    def modality_of(self, ids: Any) -> torch.Tensor:
        """Modality index of every id; raises for ids outside the vocabulary."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        self.check_ids(ids)
        boundaries = torch.tensor([self.range_of(name)[0] for name in self.modality_names[1:]], device=ids.device)
        return torch.bucketize(ids, boundaries, right=True)

    def check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.size):
            raise VocabError(f"token ids must lie in [0, {self.size}), got values in [{int(ids.min())}, "
                             f"{int(ids.max())}].")

    def allowed_mask(self, name: str, extra: tuple[str, ...] = (), device: torch.device | str | None = None
                     ) -> torch.Tensor:
        """Bool [size]: the ids a target of modality `name` may be decoded to, plus the special tokens `extra`."""
        allowed = torch.zeros(self.size, dtype=torch.bool, device=device)
        start, stop = self.range_of(name)
        allowed[start:stop] = True
        for token in extra:
            allowed[self.special_id(token)] = True
        return allowed

    # ----- tokenizer agreement ------------------------------------------------------------------------------------
    def validate_text_tokenizer(self, tokenizer: Any) -> None:
        """Raise `VocabError` unless the tokenizer's size and special ids match this layout."""
        expected = self.text_size + len(SPECIAL_TOKENS)
        if len(tokenizer) != expected:
            raise VocabError(
                f"the text tokenizer has {len(tokenizer)} tokens but this vocabulary expects {expected} "
                f"({self.text_size} text + {len(SPECIAL_TOKENS)} special); the checkpoint and tokenizer were not made "
                "together. Load the tokenizer saved with this checkpoint.")
        for token in SPECIAL_TOKENS:
            got, want = tokenizer.convert_tokens_to_ids(token), self.special_id(token)
            if got != want:
                raise VocabError(
                    f"special token {token} has id {got} in the text tokenizer but {want} in the vocabulary; decoding "
                    "would map it to the wrong token. Rebuild the tokenizer with "
                    "unimask.tokenizers.text.add_special_tokens.")

    def validate_size(self, name: str, size: int) -> None:
        """Raise `VocabError` if a modality's tokenizer has another number of ids than this layout."""
        want = self.size_of(name)
        if size != want:
            raise VocabError(f"the {name} tokenizer has {size} codes but the vocabulary has {want} {name} ids; the "
                             "checkpoint and this tokenizer were not made together.")

    # ----- persistence --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "text_size": self.text_size,
                "modalities": [[name, size] for name, size in self.modalities],
                "special_tokens": list(self.special_tokens)}

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
        data = read_json(path, VocabError, "a unimask vocabulary")
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise VocabError(f"{path} is not a {VOCAB_FORMAT} file; it was written by another unimask version. "
                             "Export the model again with this version.")
        unknown = set(data) - {"format", "text_size", "modalities", "special_tokens"}
        if unknown:
            raise VocabError(f"{path} has unknown keys {sorted(unknown)}.")
        try:
            return cls(data["text_size"], tuple((n, s) for n, s in data["modalities"]), data["special_tokens"])
        except (KeyError, TypeError, ValueError) as err:
            raise VocabError(f"{path}: {err}") from None
