"""What every action tokenizer shares: errors, file names, argument checks and the encode/decode reports."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unimask.errors import InputError

SETTINGS_FILE = "action_tokenizer.json"
BPE_FILE = "fast_bpe.json"
FORMAT_VERSION = 1

NORM_MODES = ("quantile", "minmax")
PAD_MODES = ("last", "zeros", "none")
ON_ERROR = ("raise", "zeros", "hold")

class ActionTokenizerError(InputError):
    """An action tokenizer was misused: not fitted, wrong shapes, or a saved file is incomplete."""


class ActionDecodeError(ActionTokenizerError):
    """A code sequence does not decode to an action chunk (bad code, bad characters, wrong length)."""


class ActionClippingWarning(UserWarning):
    """Some normalised action values fell outside [-1, 1] and were clipped."""


def as_float_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ActionTokenizerError(f"`{name}` must be a numeric array, got {type(x).__name__} ({err}).") from None
    if arr.ndim < 1:
        raise ActionTokenizerError(f"`{name}` must have at least one axis (the action dimension), got a scalar.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ActionTokenizerError(f"`{name}` holds {bad} NaN/inf values; clean the data before tokenizing.")
    return arr


def as_int_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ActionTokenizerError(f"`{name}` must be an integer array, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def require_key(data: dict, key: str, where: str) -> Any:
    if key not in data:
        raise ActionTokenizerError(f"{where} lacks `{key}`; the file is incomplete. Refit and save the tokenizer.")
    return data[key]


@dataclass
class EncodeInfo:
    """What happened while encoding (returned with `return_info=True`)."""

    n_values: int  # action values encoded
    n_clipped: int  # values whose normalised value fell outside [-1, 1] and were clipped
    clipped_per_dim: list[int]  # the same count split by action dimension
    tokens_per_chunk: np.ndarray | None = None  # FAST: BPE tokens per chunk before padding/truncation
    length: int | None = None  # FAST: the fixed length requested, if any
    n_truncated: int = 0  # FAST: chunks longer than `length` (they cannot be decoded back)

    @property
    def clipped_fraction(self) -> float:
        return self.n_clipped / max(self.n_values, 1)

    @property
    def truncated_fraction(self) -> float:
        n = 0 if self.tokens_per_chunk is None else len(self.tokens_per_chunk)
        return self.n_truncated / max(n, 1)


@dataclass
class DecodeInfo:
    """What happened while decoding (returned with `return_info=True`)."""

    on_error: str  # the policy used: "raise", "zeros" or "hold"
    failed: np.ndarray  # bool per decoded unit (chunk for FAST, time step for bins): True where the fallback was used
    errors: list[str] = field(default_factory=list)  # the reason of each failure, in order

    @property
    def n_failed(self) -> int:
        return int(self.failed.sum())


def warn_clipping(what: str, n_clipped: int, n_values: int, per_dim: np.ndarray) -> None:
    if n_clipped:
        dims = ", ".join(f"dim {d}: {int(c)}" for d, c in enumerate(per_dim) if c)
        warnings.warn(
            f"{what}: clipped {n_clipped} of {n_values} normalised action values to [-1, 1] ({dims}). Inputs outside "
            "the fitted bounds lose information; refit on data that covers them or use norm='minmax'.",
            ActionClippingWarning,
            stacklevel=3,
        )
