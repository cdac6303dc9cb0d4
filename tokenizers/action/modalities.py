"""The action and state modalities: robot action chunks as codes (bins or FAST), proprioceptive state as bins."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unimask.config import MAX_LENGTH, Setting
from unimask.errors import InputError
from unimask.modality import Modality, SampleError, decode_npy

from . import ActionTokenizerError, BinActionTokenizer, load_action_tokenizer


def _finite_float(raw: bytes, ndim: int, what: str) -> np.ndarray:
    array = decode_npy(raw)
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise SampleError("bad_shape", f"{what} must be a finite float array with {ndim} axes, got {array.dtype} "
                                       f"{array.shape}")
    return array.astype(np.float32)


class ActionModality(Modality):
    """Action chunks [H, D] in real units; codes through the action tokenizer's saved normalisation."""

    name = "action"
    raw_keys = ("actions.npy",)
    codes_key = "act_codes.npy"
    mask_schedule = "linear"
    scheduler = "confidence"
    delimiters = ("soa", "eoa")
    sequence_settings = (
        Setting("action_horizon", int, 8, "actions per chunk", minimum=1, maximum=MAX_LENGTH),
        Setting("action_dim", int, 4, "numbers per action", minimum=1, maximum=MAX_LENGTH),
        Setting("action_length", int | None, None, "codes per chunk for tokenizers whose code count varies (FAST); "
                "unset: the tokenizer's own", minimum=1, maximum=MAX_LENGTH),
    )

    def load_tokenizer(self, directory: Any) -> Any:
        return load_action_tokenizer(directory)

    def num_tokens(self, tokenizer: Any, settings: Any) -> int:
        return tokenizer.tokens_per_chunk(settings.action_horizon, settings.action_length)

    def check_settings(self, tokenizer: Any, settings: Any) -> None:
        if settings.action_dim != tokenizer.action_dim:
            raise ActionTokenizerError(f"sequence.action_dim is {settings.action_dim} but the action tokenizer was "
                                       f"fitted on {tokenizer.action_dim} dimensions.")
        if getattr(tokenizer, "horizon", None) not in (None, settings.action_horizon):
            raise ActionTokenizerError(f"sequence.action_horizon is {settings.action_horizon} but the action tokenizer "
                                       f"was fitted on chunks of {tokenizer.horizon} steps.")

    def encode(self, tokenizer: Any, values: Sequence[np.ndarray], settings: Any) -> list[np.ndarray]:
        return list(tokenizer.encode_chunks(np.stack(values), settings.action_length))

    def decode(self, tokenizer: Any, codes: np.ndarray, settings: Any) -> np.ndarray:
        return np.asarray(tokenizer.decode_chunks(codes, settings.action_horizon), dtype=np.float32)

    def decode_mean(self, tokenizer: Any, probabilities: np.ndarray, settings: Any) -> np.ndarray:
        """Chunks [B, H, D] in real units as the expected value of each position's distribution over the bins
        (B, N, n_bins), instead of its most likely bin: for ordered codes the mean is the better point estimate (the
        HL-Gauss loss trains a distribution whose mean is the regression target)."""
        if not isinstance(tokenizer, BinActionTokenizer):
            raise InputError(f"the mean of the predicted distribution needs ordered codes (the bins tokenizer); this "
                             f"checkpoint's {type(tokenizer).__name__} codes are not values. Use estimate='mode'.")
        centres = -1.0 + (np.arange(tokenizer.n_bins) + 0.5) * tokenizer.bin_width
        normalised = (np.asarray(probabilities, dtype=np.float64) @ centres).reshape(
            len(probabilities), settings.action_horizon, -1)
        return np.asarray(tokenizer.normalizer.denormalize(normalised), dtype=np.float32)

    def prefix_codes(self, tokenizer: Any, actions: np.ndarray) -> np.ndarray:
        """Codes [B, d * D] of the first d actions [B, d, D] of chunks, the known part when the rest is inpainted."""
        if not isinstance(tokenizer, BinActionTokenizer):
            raise InputError(f"inpainting executed actions needs one code per action value (the bins tokenizer); "
                             f"this checkpoint's {type(tokenizer).__name__} codes a chunk as a whole.")
        return np.asarray(tokenizer.encode(actions), dtype=np.int64).reshape(len(actions), -1)

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> np.ndarray:
        return _finite_float(raw["actions.npy"], 2, "actions.npy")

    def dataset_mismatch(self, tokenizer: Any, card: dict[str, Any], settings: Any) -> str | None:
        dim, horizon = card.get("action_dim"), card.get("horizon")
        if dim is not None and dim != settings.action_dim:
            return (f"its actions have {dim} dimensions but the model's action tokenizer codes {settings.action_dim} "
                    "(bins and statistics are per dimension): fit an action tokenizer on this data (`unimask "
                    "fit-actions`) and set sequence.action_dim to match; a fine-tuned bundle cannot change it.")
        if horizon is not None and horizon != settings.action_horizon:
            return (f"its chunks have {horizon} actions but the model writes {settings.action_horizon} "
                    "(sequence.action_horizon): write the data again with that horizon.")
        return None

    def check(self, value: np.ndarray, card: dict[str, Any]) -> None:
        dim, horizon = card.get("action_dim"), card.get("horizon")
        if dim is not None and value.shape[1] != dim:
            raise SampleError("bad_shape", f"actions have {value.shape[1]} dims, expected {dim}")
        if horizon is not None and value.shape[0] != horizon:
            raise SampleError("bad_shape", f"action chunk has {value.shape[0]} steps, expected {horizon}")


class StateModality(Modality):
    """Proprioceptive state [S] as one bin code per dimension (a condition of robot tasks)."""

    name = "state"
    raw_keys = ("state.npy",)
    scheduler = "confidence"
    delimiters = ("sop", "eop")

    def load_tokenizer(self, directory: Any) -> Any:
        return load_action_tokenizer(directory)

    def num_tokens(self, tokenizer: Any, settings: Any) -> int:
        return tokenizer.action_dim

    def encode(self, tokenizer: Any, values: Sequence[np.ndarray], settings: Any = None) -> list[np.ndarray]:
        return list(np.asarray(tokenizer.encode(np.stack(values)), dtype=np.int64).reshape(len(values), -1))

    def decode(self, tokenizer: Any, codes: np.ndarray, settings: Any = None) -> np.ndarray:
        return np.asarray(tokenizer.decode(codes), dtype=np.float32)

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> np.ndarray:
        return _finite_float(raw["state.npy"], 1, "state.npy")

    def check(self, value: np.ndarray, card: dict[str, Any]) -> None:
        dim = card.get("state_dim")
        if dim is not None and value.shape[0] != dim:
            raise SampleError("bad_shape", f"state.npy must be [{dim}], got {value.shape}")
