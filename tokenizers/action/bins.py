"""Uniform bins (OpenVLA-style): one code per normalised action value."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import ActionTokenizerBase
from .common import (SETTINGS_FILE, ActionDecodeError, ActionTokenizerError, DecodeInfo, EncodeInfo, as_int_array,
                     require_key, warn_clipping)
from .normalizer import ActionNormalizer


class BinActionTokenizer(ActionTokenizerBase):
    """Each normalised action value -> one of `n_bins` equal-width bins of [-1, 1] (OpenVLA-style).

    `encode(actions [..., D]) -> int64 codes [..., D]`; `decode(codes [..., D]) -> actions [..., D]` in real units
    (bin centres). For a chunk `[H, D]` the model sees `H * D` codes, time-major.
    """

    kind = "bins"

    def __init__(self, n_bins: int = 256, norm: str = "quantile", low_quantile: float = 0.01,
                 high_quantile: float = 0.99, exclude_dims: Sequence[int] = ()) -> None:
        if not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
            raise ActionTokenizerError(f"`n_bins` must be an integer >= 2, got {n_bins!r}.")
        super().__init__(ActionNormalizer(norm, low_quantile, high_quantile, exclude_dims))
        self.n_bins = int(n_bins)

    @property
    def vocab_size(self) -> int:
        return self.n_bins

    @property
    def ordinal(self) -> bool:
        """Codes are ordered values: a neighbouring code is a neighbouring value (what an ordinal loss relies on)."""
        return True

    @property
    def codebook_vectors(self) -> np.ndarray:
        """(n_bins, 16) features of each bin's value in [-1, 1] (sines and cosines at 8 frequencies): embedding rows
        started from them (`init.codebook_embeddings`) begin with neighbouring bins close together."""
        centres = -1.0 + (np.arange(self.n_bins) + 0.5) * self.bin_width
        angles = centres[:, None] * (np.pi / 2) * 2.0 ** np.arange(8)[None]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)

    @property
    def bin_width(self) -> float:
        """Width of one bin in normalised space; the round trip error is at most half of it."""
        return 2.0 / self.n_bins

    def fit(self, actions: Any, valid: Any = None) -> "BinActionTokenizer":
        """Fit the normalisation on `actions` [..., D] (`valid` [...] drops padded steps)."""
        self.normalizer.fit(actions, valid)
        return self

    def encode(self, actions: Any, *, return_info: bool = False) -> np.ndarray | tuple[np.ndarray, EncodeInfo]:
        self._check_fitted()
        y, per_dim = self.normalizer.normalize(actions, clip=True)
        codes = np.floor((y + 1.0) * 0.5 * self.n_bins).astype(np.int64)
        codes = np.minimum(codes, self.n_bins - 1)  # y == 1 belongs to the top bin
        n_clipped = int(per_dim.sum())
        warn_clipping("BinActionTokenizer.encode", n_clipped, y.size, per_dim)
        if return_info:
            return codes, EncodeInfo(n_values=int(y.size), n_clipped=n_clipped, clipped_per_dim=per_dim.tolist())
        return codes

    def decode(self, codes: Any, *, on_error: str = "raise", hold_action: Any = None, dtype: Any = np.float32,
               return_info: bool = False) -> np.ndarray | tuple[np.ndarray, DecodeInfo]:
        """Bin centres in real units. A code outside [0, n_bins) raises `ActionDecodeError` unless `on_error` says
        how to replace that time step ("zeros": zeros in real units, "hold": `hold_action`)."""
        self._check_fitted()
        c = as_int_array(codes, "codes")
        if c.ndim < 1 or c.shape[-1] != self.action_dim:
            raise ActionTokenizerError(f"`codes` must end with the action dimension {self.action_dim}, "
                                       f"got shape {c.shape}.")
        hold = self._check_on_error(on_error, hold_action, self.action_dim)
        bad = (c < 0) | (c >= self.n_bins)
        failed = bad.any(axis=-1)
        errors = [f"step {tuple(int(i) for i in idx)}: code outside [0, {self.n_bins})" for idx in np.argwhere(failed)]
        if errors and on_error == "raise":
            raise ActionDecodeError(f"{len(errors)} time steps hold codes outside [0, {self.n_bins}), e.g. "
                                    f"{errors[0]}; pass on_error='zeros' or 'hold' to replace them explicitly.")
        centres = -1.0 + (np.clip(c, 0, self.n_bins - 1) + 0.5) * self.bin_width
        actions = self.normalizer.denormalize(centres)
        if errors:
            try:
                fill = np.zeros(self.action_dim) if hold is None else np.broadcast_to(hold, actions.shape)
            except ValueError:
                raise ActionTokenizerError(f"`hold_action` of shape {hold.shape} does not broadcast to the decoded "
                                           f"actions {actions.shape}.") from None
            actions = np.where(failed[..., None], fill, actions)
            warnings.warn(f"BinActionTokenizer.decode: replaced {len(errors)} invalid time steps ({on_error}).",
                          stacklevel=2)
        actions = actions.astype(dtype)
        if return_info:
            return actions, DecodeInfo(on_error=on_error, failed=failed, errors=errors)
        return actions

    def tokens_per_chunk(self, horizon: int, length: int | None = None) -> int:
        return horizon * self.action_dim

    def encode_chunks(self, chunks: Any, length: int | None = None) -> np.ndarray:
        codes = self.encode(chunks)
        return codes.reshape(len(codes), -1)

    def decode_chunks(self, codes: Any, horizon: int, **decode_options: Any) -> np.ndarray:
        codes = as_int_array(codes, "codes")
        return self.decode(codes.reshape(len(codes), horizon, self.action_dim), **decode_options)

    def _settings(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins}

    @classmethod
    def _from_settings(cls, data: dict[str, Any], directory: Path) -> "BinActionTokenizer":
        where = f"{directory / SETTINGS_FILE}:settings"
        settings = data["settings"]
        tokenizer = cls(n_bins=require_key(settings, "n_bins", where))
        tokenizer.normalizer = ActionNormalizer.from_dict(data["normalizer"], f"{directory / SETTINGS_FILE}:normalizer")
        return tokenizer
