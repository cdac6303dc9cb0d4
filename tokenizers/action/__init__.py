"""Action tokenizers: uniform bins (OpenVLA-style) and FAST (DCT + byte-level BPE), with saved normalisation.

Both tokenizers first map every action dimension to [-1, 1] with an `ActionNormalizer` fitted on data (quantile
bounds q01/q99 as OpenVLA, or min/max; chosen dimensions such as a gripper already in [-1, 1] pass through). Values
that land outside [-1, 1] are clipped, counted and reported with a warning (`ActionClippingWarning`).

* `BinActionTokenizer`: each normalised value -> one of `n_bins` uniform bins of [-1, 1]. Codes have the shape of
  the actions (`[..., D]`); a chunk `[H, D]` becomes `H * D` codes in time-major order (`codes.reshape(-1)`).
  The round trip error is at most half a bin width (`1 / n_bins`) in normalised space.
* `FASTActionTokenizer`: a chunk `[H, D]` -> orthonormal DCT along time per dimension -> multiply by `scale`, round
  -> flatten with the lowest frequency of every dimension first -> integers to characters -> byte-level BPE
  (Hugging Face `tokenizers`). Codes are variable in number per chunk; `encode(..., length=L)` pads with
  `pad_code` (= the last code id) to a fixed length for the unified model and reports chunks that did not fit.
  Decoding an invalid code sequence raises `ActionDecodeError` unless `on_error="zeros"|"hold"` is passed, in
  which case the failed chunks are replaced and listed in the returned `DecodeInfo`.

`vocab_size` of either tokenizer is the number of distinct code ids it emits (for FAST: the BPE vocabulary plus
the pad code); it is the action modality's share of `UnifiedVocab`. `save_pretrained(dir)` writes
`action_tokenizer.json` (kind, settings, statistics) and, for FAST, `fast_bpe.json`; `load_action_tokenizer(dir)`
returns the right class. A tokenizer that was never fitted refuses to encode or decode; a saved file with a missing
or malformed statistic refuses to load.

The `unimask fit-actions` command (`unimask.training.fit_actions`) fits either kind from episodes.
"""

from __future__ import annotations

from pathlib import Path

from .base import ActionTokenizerBase, read_settings
from .bins import BinActionTokenizer
from .chunking import chunk_episode, chunk_episodes
from .common import (ActionClippingWarning, ActionDecodeError, ActionTokenizerError, DecodeInfo, EncodeInfo, NORM_MODES, ON_ERROR,
                     PAD_MODES)
from .fast import FASTActionTokenizer
from .normalizer import ActionNormalizer

ActionTokenizer = BinActionTokenizer | FASTActionTokenizer
_KINDS: dict[str, type[ActionTokenizerBase]] = {"bins": BinActionTokenizer, "fast": FASTActionTokenizer}


def load_action_tokenizer(directory: str | Path) -> BinActionTokenizer | FASTActionTokenizer:
    """Load a saved action tokenizer of either kind (read from its `action_tokenizer.json`)."""
    kind = read_settings(directory)["kind"]
    if kind not in _KINDS:
        raise ActionTokenizerError(f"{directory} holds an unknown action tokenizer kind {kind!r}; known: "
                                   f"{sorted(_KINDS)}.")
    return _KINDS[kind].from_pretrained(directory)  # type: ignore[return-value]


__all__ = [
    "ActionClippingWarning", "ActionDecodeError", "ActionNormalizer", "ActionTokenizer", "ActionTokenizerBase",
    "ActionTokenizerError", "BinActionTokenizer", "DecodeInfo", "EncodeInfo", "FASTActionTokenizer", "NORM_MODES", "ON_ERROR",
    "PAD_MODES", "chunk_episode", "chunk_episodes", "load_action_tokenizer",
]
