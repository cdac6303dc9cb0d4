"""Text: the text modality, and its tokenizers (train a byte-level BPE, or load any local Hugging Face folder).

Either way the unimask special tokens (`unimask.modality.SPECIAL_TOKENS`) are appended after the tokenizer's own
vocabulary, in order, so their ids are exactly the start of the vocabulary's special range. Nothing here reaches
for a hub.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from unimask.config import MAX_LENGTH, Setting  # noqa: E402
from unimask.errors import InputError, InputTypeError  # noqa: E402
from unimask.modality import SPECIAL_TOKENS, Modality, SampleError, VocabError  # noqa: E402


def add_special_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Append the unimask special tokens (ids len(tokenizer), len(tokenizer)+1, ...) and set pad/eos."""
    existing = [t for t in SPECIAL_TOKENS if t in tokenizer.get_vocab()]
    if existing:
        if existing == list(SPECIAL_TOKENS) and base_text_size(tokenizer) == len(tokenizer) - len(SPECIAL_TOKENS):
            return tokenizer
        raise VocabError(f"the tokenizer already has some unimask special tokens {existing} at unexpected ids; "
                         "start from the tokenizer without them.")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                                 replace_extra_special_tokens=False)
    tokenizer.pad_token = "<|pad|>"
    tokenizer.eos_token = "<|eos|>"
    return tokenizer


def base_text_size(tokenizer: PreTrainedTokenizerFast) -> int:
    """Number of ids before the unimask special tokens, i.e. `UnifiedVocab.text_size`."""
    first_special = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0])
    if first_special is None or first_special == tokenizer.unk_token_id:
        return len(tokenizer)
    return first_special


def train_text_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 1,
                         out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` base tokens on `texts` and add the unimask special tokens."""
    if vocab_size < 257:
        raise ValueError(f"`vocab_size` must be >= 257 (256 byte tokens + merges), got {vocab_size}.")
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty; give at least one string to train the tokenizer on.")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = add_special_tokens(PreTrainedTokenizerFast(tokenizer_object=bpe))
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_text_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a local tokenizer folder (ours, or any Hugging Face one) and make sure the special tokens are there."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"text tokenizer folder {directory} does not exist.")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{directory} holds a slow tokenizer; unimask needs a fast (tokenizers-backed) one.")
    return add_special_tokens(tokenizer)


def decode_text(tokenizer: PreTrainedTokenizerFast, ids: Iterable[int]) -> str:
    """Decode up to the first `<|eos|>`, dropping special tokens."""
    ids = list(ids)
    eos = tokenizer.convert_tokens_to_ids("<|eos|>")
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


@dataclass(frozen=True)
class TextSample:
    """The text of a shard sample: the stored `txt` and the paraphrases its json lists (captions or instructions)."""

    stored: str
    paraphrases: tuple[str, ...]

    def choose(self, how: str, rng: np.random.Generator) -> str:
        """"random": a paraphrase drawn with `rng`; "first": the canonical (first) paraphrase; "stored": `txt`."""
        if how == "random" and len(self.paraphrases) > 1:
            return self.paraphrases[int(rng.integers(len(self.paraphrases)))]
        if how == "first" and self.paraphrases:
            return self.paraphrases[0]
        return self.stored


class TextModality(Modality):
    """Text: the tokenizer's own ids; a text target is padded with <eos> then <pad> to `caption_length`."""

    name = "text"
    raw_keys = ("txt",)
    mask_schedule = "linear"
    scheduler = "text"
    padded = True
    choices = ("random", "first", "stored")  # how a stream picks among a sample's paraphrases
    sequence_settings = (
        Setting("caption_length", int, 32, "tokens of a text target: the text, one <eos>, then <pad>s", minimum=2,
                maximum=MAX_LENGTH),
        Setting("max_condition_text", int, 64, "most tokens of a prompt or instruction", minimum=1,
                maximum=MAX_LENGTH),
    )

    def load_tokenizer(self, directory: Any) -> PreTrainedTokenizerFast:
        return load_text_tokenizer(directory)

    def vocab_size(self, tokenizer: Any) -> int:
        return base_text_size(tokenizer)

    def num_tokens(self, tokenizer: Any, settings: Any) -> None:
        return None

    def encode(self, tokenizer: Any, values: Sequence[str], settings: Any = None) -> list[np.ndarray]:
        out = []
        for text in values:
            if not isinstance(text, str):
                raise InputTypeError(f"every text must be a string, got {type(text).__name__}.")
            if not text.strip():
                raise InputError(f"every text must be a non-empty string, got {text!r}.")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(f"the text {text[:60]!r} is not valid Unicode ({err.reason} at position "
                                 f"{err.start}); remove the lone surrogate characters.") from None
            special = [token for token in SPECIAL_TOKENS if token in text]
            if special:
                raise InputError(f"the text {text[:60]!r} contains the special token string(s) {special}, which "
                                 "unimask reserves for its sequence layout; remove them from the text.")
            out.append(np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64))
        return out

    def decode(self, tokenizer: Any, codes: np.ndarray, settings: Any = None) -> list[str]:
        return [decode_text(tokenizer, row.tolist()) for row in np.asarray(codes)]

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> TextSample:
        stored = raw["txt"].decode("utf-8").strip()
        if not stored:
            raise SampleError("missing_key", "txt is empty")
        listed = meta.get("captions") or meta.get("instructions") or []
        paraphrases = tuple(t for t in listed if isinstance(t, str) and t.strip()) or (stored,)
        return TextSample(stored, paraphrases)

    def select(self, value: TextSample, how: str, rng: np.random.Generator) -> str:
        return value.choose(how, rng)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-text-tokenizer", help="train a byte-level BPE text tokenizer")
    parser.add_argument("--texts", required=True, help="a text file with one training string per line")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    path = Path(args.texts)
    if not path.is_file():
        raise SystemExit(f"--texts {path} does not exist.")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    tokenizer = train_text_tokenizer(lines, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {len(tokenizer)}-token tokenizer on {len(lines)} lines; saved to {args.out}")
    return 0
