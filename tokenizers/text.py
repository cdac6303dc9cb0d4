"""Text tokenizers: train a byte-level BPE, or load any local Hugging Face tokenizer folder.

Either way the unimask special tokens (`unimask.vocab.SPECIAL_TOKENS`) are appended after the tokenizer's own
vocabulary, in order, so their ids are exactly the vocabulary's special range. Nothing here reaches for a hub.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from unimask.vocab import SPECIAL_TOKENS, UnifiedVocab, VocabError  # noqa: E402


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


def vocab_for(tokenizer: PreTrainedTokenizerFast, image_codebook_size: int = 0, action_vocab_size: int = 0,
              state_bins: int = 0) -> UnifiedVocab:
    """The `UnifiedVocab` whose text and special ranges match this tokenizer."""
    vocab = UnifiedVocab(base_text_size(tokenizer), image_codebook_size, action_vocab_size, state_bins)
    vocab.validate_text_tokenizer(tokenizer)
    return vocab


def encode_text(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of `text` without any special tokens (templates add those)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}.")
    return tokenizer.encode(text, add_special_tokens=False)


def decode_text(tokenizer: PreTrainedTokenizerFast, ids: Iterable[int]) -> str:
    """Decode up to the first `<|eos|>`, dropping special tokens."""
    ids = list(ids)
    eos = tokenizer.convert_tokens_to_ids("<|eos|>")
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


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
