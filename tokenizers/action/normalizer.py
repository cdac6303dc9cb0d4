"""Per-dimension normalisation of actions to [-1, 1], with statistics that travel with the tokenizer."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .common import NORM_MODES, ActionTokenizerError, as_float_array, require_key


class ActionNormalizer:
    """Per-dimension affine map of actions to [-1, 1]: `2 (x - low) / (high - low) - 1`.

    `mode="quantile"` takes `low`/`high` as the `low_quantile`/`high_quantile` quantiles of each dimension
    (numpy's default linear interpolation; q01/q99 as OpenVLA), `mode="minmax"` the minimum and maximum. Dimensions in
    `exclude_dims` are returned unchanged. A constant dimension (`high == low`) normalises to 0 and decodes back to
    `low` exactly; any other value in it counts as clipped.
    """

    def __init__(self, mode: str = "quantile", low_quantile: float = 0.01, high_quantile: float = 0.99,
                 exclude_dims: Sequence[int] = ()) -> None:
        if mode not in NORM_MODES:
            raise ActionTokenizerError(f"`mode` must be one of {NORM_MODES}, got {mode!r}.")
        if not (0.0 <= low_quantile < high_quantile <= 1.0):
            raise ActionTokenizerError(
                f"quantiles must satisfy 0 <= low_quantile < high_quantile <= 1, got {low_quantile}, {high_quantile}.")
        exclude = sorted({int(d) for d in exclude_dims})
        if any(d < 0 for d in exclude):
            raise ActionTokenizerError(f"`exclude_dims` must be non-negative dimension indices, got {exclude}.")
        self.mode = mode
        self.low_quantile = float(low_quantile)
        self.high_quantile = float(high_quantile)
        self.exclude_dims = exclude
        self.low: np.ndarray | None = None  # [D]
        self.high: np.ndarray | None = None  # [D]

    @property
    def fitted(self) -> bool:
        return self.low is not None

    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self.low.shape[0])

    def _check_fitted(self) -> None:
        if self.low is None or self.high is None:
            raise ActionTokenizerError("the action normaliser has no statistics: call `fit(actions)` or load a "
                                       "saved tokenizer with `from_pretrained(dir)` first.")

    def fit(self, actions: Any, valid: Any = None) -> "ActionNormalizer":
        """Fit bounds from `actions` [..., D]; `valid` [...] (bool) drops padded steps from the statistics."""
        x = as_float_array(actions, "actions")
        flat = x.reshape(-1, x.shape[-1])
        if valid is not None:
            mask = np.asarray(valid, dtype=bool)
            if mask.shape != x.shape[:-1]:
                raise ActionTokenizerError(f"`valid` must have shape {x.shape[:-1]} (actions without the last axis), "
                                           f"got {mask.shape}.")
            flat = flat[mask.reshape(-1)]
        if flat.shape[0] == 0:
            raise ActionTokenizerError("cannot fit action statistics on zero (valid) steps.")
        dim = flat.shape[1]
        if self.exclude_dims and self.exclude_dims[-1] >= dim:
            raise ActionTokenizerError(f"`exclude_dims` {self.exclude_dims} name a dimension >= the action dimension "
                                       f"{dim}.")
        if self.mode == "quantile":
            low, high = np.quantile(flat, [self.low_quantile, self.high_quantile], axis=0)
        else:
            low, high = flat.min(axis=0), flat.max(axis=0)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        return self

    def _parts(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._check_fitted()
        if dim != self.dim:
            raise ActionTokenizerError(f"actions have {dim} dimensions but the tokenizer was fitted on {self.dim}.")
        excluded = np.zeros(dim, dtype=bool)
        excluded[self.exclude_dims] = True
        span = self.high - self.low
        constant = (span <= 0) & ~excluded
        safe_span = np.where(constant | excluded, 1.0, span)
        return excluded, constant, safe_span, self.low

    def normalize(self, actions: Any, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Return `(normalised [..., D], clipped_per_dim [D])`; with `clip`, values outside [-1, 1] are clipped."""
        x = as_float_array(actions, "actions")
        excluded, constant, span, low = self._parts(x.shape[-1])
        y = np.where(excluded, x, 2.0 * (x - low) / span - 1.0)
        # a constant dimension carries no information: everything maps to 0, and values off it count as clipped
        off_constant = constant & ~np.isclose(x, low, rtol=1e-9, atol=1e-12)
        y = np.where(constant, 0.0, y)
        outside = (y < -1.0) | (y > 1.0) | off_constant
        per_dim = outside.reshape(-1, x.shape[-1]).sum(axis=0)
        if clip:
            y = np.clip(y, -1.0, 1.0)
        return y, per_dim

    def denormalize(self, normalized: Any) -> np.ndarray:
        y = as_float_array(normalized, "normalized")
        excluded, constant, span, low = self._parts(y.shape[-1])
        x = (y + 1.0) * 0.5 * span + low
        x = np.where(constant, low, x)
        return np.where(excluded, y, x)

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {"mode": self.mode, "low_quantile": self.low_quantile, "high_quantile": self.high_quantile,
                "exclude_dims": list(self.exclude_dims), "dim": self.dim, "low": self.low.tolist(),
                "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "normalizer") -> "ActionNormalizer":
        if not isinstance(data, dict):
            raise ActionTokenizerError(f"{where} must be a mapping of statistics, got {type(data).__name__}.")
        norm = cls(mode=require_key(data, "mode", where), low_quantile=require_key(data, "low_quantile", where),
                   high_quantile=require_key(data, "high_quantile", where),
                   exclude_dims=require_key(data, "exclude_dims", where))
        dim = require_key(data, "dim", where)
        for key in ("low", "high"):
            value = require_key(data, key, where)
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ActionTokenizerError(f"{where}.{key} must be a list of {dim} numbers, got {value!r}.") from None
            if arr.shape != (dim,) or not np.all(np.isfinite(arr)):
                raise ActionTokenizerError(f"{where}.{key} must be {dim} finite numbers (one per action dimension), "
                                           f"got {value!r}; the saved statistics are incomplete.")
            setattr(norm, key, arr)
        if np.any(norm.high < norm.low):
            raise ActionTokenizerError(f"{where} has high < low for dimensions "
                                       f"{np.nonzero(norm.high < norm.low)[0].tolist()}; the file is corrupt.")
        if norm.exclude_dims and norm.exclude_dims[-1] >= dim:
            raise ActionTokenizerError(f"{where}.exclude_dims {norm.exclude_dims} exceed the action dimension {dim}.")
        return norm
