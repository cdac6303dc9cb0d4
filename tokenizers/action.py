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
the pad code); it is what `UnifiedVocab.action_vocab_size` must be. `save_pretrained(dir)` writes
`action_tokenizer.json` (kind, settings, statistics) and, for FAST, `fast_bpe.json`; `load_action_tokenizer(dir)`
returns the right class. A tokenizer that was never fitted refuses to encode or decode; a saved file with a missing
or malformed statistic refuses to load.

The `unimask fit-actions` command (see `add_parser`) fits either kind from an .npz of episodes or webdataset shards.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from scipy.fft import dct, idct

from unimask.atomic import atomic_write, atomic_write_text

SETTINGS_FILE = "action_tokenizer.json"
BPE_FILE = "fast_bpe.json"
FORMAT_VERSION = 1

NORM_MODES = ("quantile", "minmax")
PAD_MODES = ("last", "zeros", "none")
ON_ERROR = ("raise", "zeros", "hold")

# Code points from U+D800 are UTF-16 surrogates and cannot be written as UTF-8, so the FAST alphabet stops below.
_MAX_SYMBOL = 0xD7FF


class ActionTokenizerError(ValueError):
    """An action tokenizer was misused: not fitted, wrong shapes, or a saved file is incomplete."""


class ActionDecodeError(ActionTokenizerError):
    """A code sequence does not decode to an action chunk (bad code, bad characters, wrong length)."""


class ActionClippingWarning(UserWarning):
    """Some normalised action values fell outside [-1, 1] and were clipped."""


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------
def _as_float_array(x: Any, name: str) -> np.ndarray:
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


def _as_int_array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ActionTokenizerError(f"`{name}` must be an integer array, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def _require_key(data: dict, key: str, where: str) -> Any:
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


def _warn_clipping(what: str, n_clipped: int, n_values: int, per_dim: np.ndarray) -> None:
    if n_clipped:
        dims = ", ".join(f"dim {d}: {int(c)}" for d, c in enumerate(per_dim) if c)
        warnings.warn(
            f"{what}: clipped {n_clipped} of {n_values} normalised action values to [-1, 1] ({dims}). Inputs outside "
            "the fitted bounds lose information; refit on data that covers them or use norm='minmax'.",
            ActionClippingWarning,
            stacklevel=3,
        )


# ----------------------------------------------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------------------------------------------
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
        x = _as_float_array(actions, "actions")
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
        x = _as_float_array(actions, "actions")
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
        y = _as_float_array(normalized, "normalized")
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
        norm = cls(mode=_require_key(data, "mode", where), low_quantile=_require_key(data, "low_quantile", where),
                   high_quantile=_require_key(data, "high_quantile", where),
                   exclude_dims=_require_key(data, "exclude_dims", where))
        dim = _require_key(data, "dim", where)
        for key in ("low", "high"):
            value = _require_key(data, key, where)
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


# ----------------------------------------------------------------------------------------------------------------
# chunking
# ----------------------------------------------------------------------------------------------------------------
def chunk_episode(actions: Any, horizon: int, stride: int = 1, pad: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """Cut an episode `[T, D]` into chunks `[N, horizon, D]` and a validity mask `[N, horizon]`.

    A chunk starts at every `stride`-th step. Near the end of the episode the chunk runs past the last action and is
    padded: `pad="last"` repeats the final action (the robot holds its last command; right for absolute targets),
    `pad="zeros"` writes zeros (right for delta/velocity actions, where zero means "stay"), `pad="none"` keeps only
    chunks that fit entirely inside the episode. `valid[n, h]` is False exactly on the padded steps.
    """
    x = _as_float_array(actions, "actions")
    if x.ndim != 2:
        raise ActionTokenizerError(f"an episode must have shape [T, D], got {x.shape}.")
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ActionTokenizerError(f"`horizon` must be an integer >= 1, got {horizon!r}.")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ActionTokenizerError(f"`stride` must be an integer >= 1, got {stride!r}.")
    if pad not in PAD_MODES:
        raise ActionTokenizerError(f"`pad` must be one of {PAD_MODES}, got {pad!r}.")
    steps, dim = x.shape
    if steps == 0:
        raise ActionTokenizerError("the episode has no steps (T = 0).")
    last_start = steps - horizon if pad == "none" else steps - 1
    starts = np.arange(0, last_start + 1, stride)
    idx = starts[:, None] + np.arange(horizon)[None, :]  # [N, H]
    valid = idx < steps
    chunks = x[np.minimum(idx, steps - 1)]  # "last" padding by index clamping
    if pad == "zeros":
        chunks = np.where(valid[..., None], chunks, 0.0)
    return chunks.reshape(len(starts), horizon, dim), valid


def chunk_episodes(episodes: Iterable[Any], horizon: int, stride: int = 1,
                   pad: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """`chunk_episode` over many episodes, concatenated: `([N, horizon, D], [N, horizon])`."""
    chunks, valids = [], []
    for i, episode in enumerate(episodes):
        c, v = chunk_episode(episode, horizon, stride, pad)
        if chunks and c.shape[-1] != chunks[0].shape[-1]:
            raise ActionTokenizerError(f"episode {i} has {c.shape[-1]} action dimensions, the first one has "
                                       f"{chunks[0].shape[-1]}; all episodes must share D.")
        chunks.append(c)
        valids.append(v)
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise ActionTokenizerError(f"no chunks: the episodes are empty or shorter than horizon={horizon} "
                                   f"with pad='none'.")
    return np.concatenate(chunks), np.concatenate(valids)


# ----------------------------------------------------------------------------------------------------------------
# common base
# ----------------------------------------------------------------------------------------------------------------
class _ActionTokenizer:
    kind = ""

    def __init__(self, normalizer: ActionNormalizer) -> None:
        self.normalizer = normalizer

    @property
    def fitted(self) -> bool:
        return self.normalizer.fitted

    @property
    def action_dim(self) -> int:
        return self.normalizer.dim

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ActionTokenizerError(f"the {self.kind} action tokenizer is not fitted: call `fit(...)` or load it "
                                       "with `from_pretrained(dir)` before encoding or decoding.")

    def _settings(self) -> dict[str, Any]:
        raise NotImplementedError

    def _save_extra(self, directory: Path) -> None:
        pass

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `action_tokenizer.json` (kind, settings, statistics) and any extra files into `directory`."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_extra(directory)
        data = {"kind": self.kind, "format_version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                "settings": self._settings(), "normalizer": self.normalizer.to_dict()}
        atomic_write_text(directory / SETTINGS_FILE, json.dumps(data, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "_ActionTokenizer":
        data = _read_settings(directory)
        if data["kind"] != cls.kind:
            raise ActionTokenizerError(f"{directory} holds a {data['kind']!r} action tokenizer, not {cls.kind!r}; "
                                       "use load_action_tokenizer(dir) to get the right class.")
        tokenizer = cls._from_settings(data, Path(directory))
        if tokenizer.vocab_size != data["vocab_size"]:
            raise ActionTokenizerError(f"{directory}: saved vocab_size {data['vocab_size']} disagrees with the "
                                       f"settings ({tokenizer.vocab_size}); the file is corrupt.")
        return tokenizer

    @classmethod
    def _from_settings(cls, data: dict[str, Any], directory: Path) -> "_ActionTokenizer":
        raise NotImplementedError

    @staticmethod
    def _check_on_error(on_error: str, hold_action: Any, dim: int) -> np.ndarray | None:
        if on_error not in ON_ERROR:
            raise ActionTokenizerError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        if on_error == "hold":
            if hold_action is None:
                raise ActionTokenizerError("`on_error='hold'` needs `hold_action` (the action to repeat, [D] or "
                                           "[N, D] in real units, e.g. the last executed action).")
            hold = _as_float_array(hold_action, "hold_action")
            if hold.shape[-1] != dim:
                raise ActionTokenizerError(f"`hold_action` must end with the action dimension {dim}, got {hold.shape}.")
            return hold
        return None


def _read_settings(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {SETTINGS_FILE} in {directory}; is this a saved action tokenizer folder?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ActionTokenizerError(f"{path} is not valid json ({err}).") from None
    for key in ("kind", "format_version", "vocab_size", "settings", "normalizer"):
        _require_key(data, key, str(path))
    if data["format_version"] != FORMAT_VERSION:
        raise ActionTokenizerError(f"{path} has format_version {data['format_version']}, this unimask reads "
                                   f"{FORMAT_VERSION}.")
    return data


# ----------------------------------------------------------------------------------------------------------------
# uniform bins
# ----------------------------------------------------------------------------------------------------------------
class BinActionTokenizer(_ActionTokenizer):
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
        _warn_clipping("BinActionTokenizer.encode", n_clipped, y.size, per_dim)
        if return_info:
            return codes, EncodeInfo(n_values=int(y.size), n_clipped=n_clipped, clipped_per_dim=per_dim.tolist())
        return codes

    def decode(self, codes: Any, *, on_error: str = "raise", hold_action: Any = None, dtype: Any = np.float32,
               return_info: bool = False) -> np.ndarray | tuple[np.ndarray, DecodeInfo]:
        """Bin centres in real units. A code outside [0, n_bins) raises `ActionDecodeError` unless `on_error` says
        how to replace that time step ("zeros": zeros in real units, "hold": `hold_action`)."""
        self._check_fitted()
        c = _as_int_array(codes, "codes")
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

    def _settings(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins}

    @classmethod
    def _from_settings(cls, data: dict[str, Any], directory: Path) -> "BinActionTokenizer":
        where = f"{directory / SETTINGS_FILE}:settings"
        settings = data["settings"]
        tokenizer = cls(n_bins=_require_key(settings, "n_bins", where))
        tokenizer.normalizer = ActionNormalizer.from_dict(data["normalizer"], f"{directory / SETTINGS_FILE}:normalizer")
        return tokenizer


# ----------------------------------------------------------------------------------------------------------------
# FAST
# ----------------------------------------------------------------------------------------------------------------
def _byte_to_char() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 convention, used by `tokenizers`' ByteLevel).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are moved, in increasing order, to the code
    points from 256 up, so every byte has a visible, non-whitespace character.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _zigzag(v: np.ndarray) -> np.ndarray:
    """Signed -> non-negative with small magnitudes first (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), so the common
    small coefficients become one-byte characters whatever the scale."""
    return np.where(v >= 0, 2 * v, -2 * v - 1)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)


class FASTActionTokenizer(_ActionTokenizer):
    """FAST: DCT along time, scale and round, low frequencies first, characters, byte-level BPE.

    Fitted on chunks `[N, H, D]` of one fixed horizon H. Per chunk, with `x` the normalised chunk in [-1, 1]:
    `C = round(scale * dct(x, axis=time, norm="ortho"))` ([H, D] integers), flattened row-major so all dimensions'
    lowest frequency comes first, each integer zigzag-mapped to a character, and the string BPE-encoded.

    Alphabet bound: an orthonormal DCT keeps the Euclidean norm, so for x in [-1, 1]^H every coefficient has
    |c| <= sqrt(H) and |round(scale * c)| <= M = ceil(scale * sqrt(H)); the alphabet is the 2M + 1 characters
    U+0000 .. U+(2M), fixed before seeing data, so nothing is clipped after normalisation.

    Round trip error (in normalised space, no clipping): each rounded coefficient is off by at most 1 / (2 scale);
    the inverse DCT is orthonormal, so per dimension the time-domain error has Euclidean norm <= sqrt(H) / (2 scale),
    i.e. RMS over time <= 1 / (2 scale) and max abs <= sqrt(H) / (2 scale). In real units multiply by
    (high - low) / 2 of the dimension.

    Codes: BPE ids in [0, bpe_vocab_size) plus `pad_code = bpe_vocab_size`, so `vocab_size = bpe_vocab_size + 1`.
    """

    kind = "fast"

    def __init__(self, scale: float = 10.0, bpe_vocab_size: int = 1024, min_frequency: int = 2,
                 norm: str = "quantile", low_quantile: float = 0.01, high_quantile: float = 0.99,
                 exclude_dims: Sequence[int] = ()) -> None:
        if not isinstance(scale, (int, float, np.floating)) or not (scale > 0) or not math.isfinite(scale):
            raise ActionTokenizerError(f"`scale` must be a finite number > 0, got {scale!r}.")
        if not isinstance(bpe_vocab_size, (int, np.integer)) or bpe_vocab_size < 256:
            raise ActionTokenizerError(f"`bpe_vocab_size` must be an integer >= 256 (the 256 byte tokens come first), "
                                       f"got {bpe_vocab_size!r}.")
        if not isinstance(min_frequency, (int, np.integer)) or min_frequency < 1:
            raise ActionTokenizerError(f"`min_frequency` must be an integer >= 1, got {min_frequency!r}.")
        super().__init__(ActionNormalizer(norm, low_quantile, high_quantile, exclude_dims))
        self.scale = float(scale)
        self.bpe_vocab_size = int(bpe_vocab_size)
        self.min_frequency = int(min_frequency)
        self.horizon: int | None = None
        self._bpe = None  # tokenizers.Tokenizer
        self._id_bytes: list[bytes] = []

    # ----- sizes ---------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.bpe_vocab_size + 1

    @property
    def pad_code(self) -> int:
        return self.bpe_vocab_size

    @property
    def fitted(self) -> bool:
        return self.normalizer.fitted and self._bpe is not None and self.horizon is not None

    @property
    def max_abs_int(self) -> int:
        """M: the largest |rounded coefficient| a chunk in [-1, 1] can give (see the class docstring)."""
        if self.horizon is None:
            raise ActionTokenizerError("the FAST tokenizer has no horizon yet: call `fit(chunks)` first.")
        return int(math.ceil(self.scale * math.sqrt(self.horizon)))

    def error_bound(self) -> tuple[float, float]:
        """(max abs, RMS over time) round trip error bounds in normalised space for in-range data."""
        return math.sqrt(self.horizon) / (2.0 * self.scale), 1.0 / (2.0 * self.scale)

    def _check_alphabet(self) -> None:
        if 2 * self.max_abs_int > _MAX_SYMBOL:
            raise ActionTokenizerError(
                f"`scale` * sqrt(horizon) = {self.scale * math.sqrt(self.horizon):.1f} is too large: the integer "
                f"alphabet (2 * {self.max_abs_int} + 1 characters) must stay below U+D800; lower `scale`.")

    # ----- core transform ----------------------------------------------------------------------------------------
    def _chunks(self, chunks: Any) -> np.ndarray:
        x = _as_float_array(chunks, "chunks")
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ActionTokenizerError(f"`chunks` must have shape [N, H, D] or [H, D], got {x.shape}.")
        if self.horizon is not None and x.shape[1] != self.horizon:
            raise ActionTokenizerError(f"chunks have horizon {x.shape[1]} but the tokenizer was fitted on horizon "
                                       f"{self.horizon}; cut chunks with chunk_episode(..., horizon={self.horizon}).")
        return x

    def _to_strings(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        y, per_dim = self.normalizer.normalize(x, clip=True)
        coeffs = dct(y, axis=1, norm="ortho")  # [N, H, D]
        ints = np.rint(coeffs * self.scale).astype(np.int64)
        m = self.max_abs_int
        # cannot trigger in exact arithmetic (|c| <= sqrt(H)); guards against float round-off at the boundary
        ints = np.clip(ints, -m, m)
        symbols = _zigzag(ints.reshape(len(ints), -1))  # row-major: frequency 0 of every dimension first
        return ["".join(map(chr, row)) for row in symbols.tolist()], per_dim

    def fit(self, chunks: Any, valid: Any = None) -> "FASTActionTokenizer":
        """Fit normalisation (on valid steps) and the BPE on action chunks [N, H, D]."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        self.horizon = None
        x = self._chunks(chunks)
        self.normalizer.fit(x, valid)
        self.horizon = int(x.shape[1])
        self._check_alphabet()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ActionClippingWarning)  # q01/q99 clip ~2% of the fit data by design
            strings, _ = self._to_strings(x)
        bpe = Tokenizer(models.BPE())
        # use_regex=False: a chunk is one "word"; GPT-2's splitting on spaces/punctuation means nothing here
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.bpe_vocab_size, min_frequency=self.min_frequency,
                                      show_progress=False, special_tokens=[],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator(strings, trainer=trainer)
        self._set_bpe(bpe)
        return self

    def _set_bpe(self, bpe: Any) -> None:
        size = bpe.get_vocab_size()
        if size > self.bpe_vocab_size:
            raise ActionTokenizerError(f"the BPE has {size} tokens but `bpe_vocab_size` is {self.bpe_vocab_size}.")
        char_to_byte = {c: b for b, c in _byte_to_char().items()}
        id_bytes: list[bytes] = [b""] * size
        for token, idx in bpe.get_vocab().items():
            try:
                id_bytes[idx] = bytes(char_to_byte[c] for c in token)
            except KeyError:
                raise ActionTokenizerError(f"BPE token {token!r} is not byte-level; the BPE file is not a FAST "
                                           "tokenizer's.") from None
        self._bpe = bpe
        self._id_bytes = id_bytes

    # ----- encode / decode -------------------------------------------------------------------------------------
    def encode(self, chunks: Any, *, length: int | None = None,
               return_info: bool = False) -> Any:
        """Encode chunks [N, H, D] (or one chunk [H, D]).

        `length=None`: a list of N lists of codes (variable length; one list for a single chunk).
        `length=L`: int64 array [N, L] (or [L]), each row padded with `pad_code`; rows longer than L are truncated,
        which makes them undecodable: they are counted in the info (`n_truncated`, `truncated_fraction`) and a
        warning names the length that would have fitted them. Pick L with `suggest_length`.
        """
        self._check_fitted()
        if length is not None and (not isinstance(length, (int, np.integer)) or length < 1):
            raise ActionTokenizerError(f"`length` must be an integer >= 1 or None, got {length!r}.")
        x = _as_float_array(chunks, "chunks")
        single = x.ndim == 2
        x = self._chunks(x)
        strings, per_dim = self._to_strings(x)
        n_clipped = int(per_dim.sum())
        _warn_clipping("FASTActionTokenizer.encode", n_clipped, x.size, per_dim)
        ids = [enc.ids for enc in self._bpe.encode_batch(strings, add_special_tokens=False)]
        counts = np.array([len(i) for i in ids], dtype=np.int64)
        info = EncodeInfo(n_values=int(x.size), n_clipped=n_clipped, clipped_per_dim=per_dim.tolist(),
                          tokens_per_chunk=counts, length=length)
        if length is None:
            out: Any = ids[0] if single else ids
        else:
            out = np.full((len(ids), length), self.pad_code, dtype=np.int64)
            for row, seq in zip(out, ids):
                row[: min(len(seq), length)] = seq[:length]
            info.n_truncated = int((counts > length).sum())
            if info.n_truncated:
                warnings.warn(
                    f"FASTActionTokenizer.encode: {info.n_truncated} of {len(ids)} chunks need more than length="
                    f"{length} tokens (up to {int(counts.max())}) and were truncated; they will not decode. Use "
                    f"length >= {int(counts.max())}.", stacklevel=2)
            if single:
                out = out[0]
        return (out, info) if return_info else out

    def suggest_length(self, chunks: Any, coverage: float = 1.0) -> int:
        """Smallest fixed length that holds the codes of a `coverage` fraction of `chunks` (1.0: all of them)."""
        if not (0.0 < coverage <= 1.0):
            raise ActionTokenizerError(f"`coverage` must be in (0, 1], got {coverage}.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ActionClippingWarning)
            _, info = self.encode(chunks, return_info=True)
        return int(np.ceil(np.quantile(info.tokens_per_chunk, coverage, method="higher")))

    def _decode_one(self, seq: Sequence[int]) -> np.ndarray:
        seq = list(seq)
        while seq and seq[-1] == self.pad_code:
            seq.pop()
        if self.pad_code in seq:
            raise ActionDecodeError(f"pad code {self.pad_code} at position {seq.index(self.pad_code)} is followed by "
                                    "non-pad codes; padding may only trail.")
        size = len(self._id_bytes)
        for pos, code in enumerate(seq):
            if not 0 <= code < size:
                raise ActionDecodeError(f"code {code} at position {pos} is not in the BPE vocabulary [0, {size}).")
        try:
            text = b"".join(self._id_bytes[c] for c in seq).decode("utf-8")  # strict: partial characters fail
        except UnicodeDecodeError as err:
            raise ActionDecodeError(f"the codes do not form valid characters ({err.reason} at byte {err.start}).") \
                from None
        symbols = np.fromiter((ord(ch) for ch in text), dtype=np.int64, count=len(text))
        top = 2 * self.max_abs_int
        if symbols.size and symbols.max() > top:
            raise ActionDecodeError(f"character U+{int(symbols.max()):04X} is outside the coefficient alphabet "
                                    f"U+0000..U+{top:04X}.")
        expected = self.horizon * self.action_dim
        if symbols.size != expected:
            raise ActionDecodeError(f"the codes give {symbols.size} coefficients, a chunk needs {expected} "
                                    f"(horizon {self.horizon} x {self.action_dim} dimensions).")
        coeffs = _unzigzag(symbols).reshape(self.horizon, self.action_dim) / self.scale
        return idct(coeffs, axis=0, norm="ortho")  # normalised [H, D]

    def decode(self, codes: Any, *, on_error: str = "raise", hold_action: Any = None, dtype: Any = np.float32,
               return_info: bool = False) -> np.ndarray | tuple[np.ndarray, DecodeInfo]:
        """Codes (a list of code lists, one code list, or an int array [N, L] / [L] with trailing `pad_code`) ->
        actions [N, H, D] (or [H, D]) in real units.

        An invalid sequence raises `ActionDecodeError` (`on_error="raise"`, the default). Opt-in fallbacks:
        `"zeros"` returns zeros in real units for that chunk, `"hold"` repeats `hold_action` ([D], or [N, D] one per
        chunk) over the horizon; either way `DecodeInfo.failed` / `.errors` (with `return_info=True`) and a warning
        say which chunks were replaced.
        """
        self._check_fitted()
        hold = self._check_on_error(on_error, hold_action, self.action_dim)
        if hasattr(codes, "detach"):
            codes = codes.detach().cpu().numpy()
        if isinstance(codes, np.ndarray):
            arr = _as_int_array(codes, "codes")
            if arr.ndim not in (1, 2):
                raise ActionTokenizerError(f"`codes` must be [L] or [N, L], got shape {arr.shape}.")
            single = arr.ndim == 1
            rows = [arr.tolist()] if single else arr.tolist()
        else:
            rows = list(codes)
            single = not rows or not isinstance(rows[0], (list, tuple, np.ndarray))
            rows = [rows] if single else [list(r) for r in rows]
            for r in rows:
                if not all(isinstance(c, (int, np.integer)) for c in r):
                    raise ActionTokenizerError("`codes` must hold integers; got a non-integer value.")
            rows = [[int(c) for c in r] for r in rows]
        if hold is not None and (hold.ndim > 2 or (hold.ndim == 2 and hold.shape[0] != len(rows))):
            raise ActionTokenizerError(f"`hold_action` must be [D] or [N, D] with N = {len(rows)} chunks, got shape "
                                       f"{hold.shape}.")
        out = np.empty((len(rows), self.horizon, self.action_dim))
        failed = np.zeros(len(rows), dtype=bool)
        errors: list[str] = []
        for n, seq in enumerate(rows):
            try:
                out[n] = self.normalizer.denormalize(self._decode_one(seq))
            except ActionDecodeError as err:
                if on_error == "raise":
                    raise ActionDecodeError(f"chunk {n}: {err} Pass on_error='zeros' or 'hold' to replace invalid "
                                            "chunks explicitly.") from None
                failed[n] = True
                errors.append(f"chunk {n}: {err}")
                out[n] = 0.0 if hold is None else (hold if hold.ndim == 1 else hold[n])
        if errors:
            warnings.warn(f"FASTActionTokenizer.decode: {len(errors)} of {len(rows)} chunks were invalid and "
                          f"replaced ({on_error}); first: {errors[0]}", stacklevel=2)
        actions = (out[0] if single else out).astype(dtype)
        if return_info:
            return actions, DecodeInfo(on_error=on_error, failed=failed, errors=errors)
        return actions

    # ----- persistence ------------------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {"scale": self.scale, "bpe_vocab_size": self.bpe_vocab_size, "min_frequency": self.min_frequency,
                "horizon": self.horizon, "bpe_file": BPE_FILE}

    def _save_extra(self, directory: Path) -> None:
        atomic_write(directory / BPE_FILE, lambda tmp: self._bpe.save(tmp))

    @classmethod
    def _from_settings(cls, data: dict[str, Any], directory: Path) -> "FASTActionTokenizer":
        from tokenizers import Tokenizer

        where = f"{directory / SETTINGS_FILE}:settings"
        s = data["settings"]
        tokenizer = cls(scale=_require_key(s, "scale", where), bpe_vocab_size=_require_key(s, "bpe_vocab_size", where),
                        min_frequency=_require_key(s, "min_frequency", where))
        horizon = _require_key(s, "horizon", where)
        if not isinstance(horizon, int) or horizon < 1:
            raise ActionTokenizerError(f"{where}.horizon must be an integer >= 1, got {horizon!r}.")
        tokenizer.normalizer = ActionNormalizer.from_dict(data["normalizer"], f"{directory / SETTINGS_FILE}:normalizer")
        tokenizer.horizon = horizon
        tokenizer._check_alphabet()
        bpe_path = directory / _require_key(s, "bpe_file", where)
        if not bpe_path.is_file():
            raise FileNotFoundError(f"the FAST tokenizer in {directory} needs its BPE file {bpe_path.name}, which is "
                                    "missing; copy the whole folder written by save_pretrained.")
        tokenizer._set_bpe(Tokenizer.from_file(str(bpe_path)))
        return tokenizer


ActionTokenizer = BinActionTokenizer | FASTActionTokenizer
_KINDS: dict[str, type[_ActionTokenizer]] = {"bins": BinActionTokenizer, "fast": FASTActionTokenizer}


def load_action_tokenizer(directory: str | Path) -> BinActionTokenizer | FASTActionTokenizer:
    """Load a saved action tokenizer of either kind (read from its `action_tokenizer.json`)."""
    kind = _read_settings(directory)["kind"]
    if kind not in _KINDS:
        raise ActionTokenizerError(f"{directory} holds an unknown action tokenizer kind {kind!r}; known: "
                                   f"{sorted(_KINDS)}.")
    return _KINDS[kind].from_pretrained(directory)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# reading episodes
# ----------------------------------------------------------------------------------------------------------------
def load_episodes(path: str | Path) -> list[np.ndarray]:
    """Episodes [T_i, D] from an .npz or from webdataset shards.

    .npz: either an array `actions` [N, T, D] (with an optional `lengths` [N] giving each episode's true length)
    or one array [T_i, D] per key (keys in sorted order). Shards: a directory of `.tar` files, a glob, a brace
    pattern or one `.tar`; every sample with an `actions.npy` (float32 [T, D]) is one episode; samples without it
    are skipped and counted.
    """
    path_str = str(path)
    if path_str.endswith(".npz"):
        return _load_npz(Path(path_str))
    return _load_shards(path_str)


def _load_npz(path: Path) -> list[np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist.")
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files)
        if "actions" in keys:
            actions = data["actions"]
            if actions.ndim != 3:
                raise ActionTokenizerError(f"{path}: `actions` must be [N, T, D], got {actions.shape}.")
            lengths = data["lengths"] if "lengths" in keys else np.full(len(actions), actions.shape[1])
            if lengths.shape != (len(actions),) or np.any(lengths < 1) or np.any(lengths > actions.shape[1]):
                raise ActionTokenizerError(f"{path}: `lengths` must be [N] integers in [1, T], got {lengths!r}.")
            return [actions[i, : int(n)] for i, n in enumerate(lengths)]
        episodes = []
        for key in keys:
            arr = data[key]
            if arr.ndim != 2:
                raise ActionTokenizerError(f"{path}: episode `{key}` must be [T, D], got {arr.shape}; or store all "
                                           "episodes as one array `actions` [N, T, D].")
            episodes.append(arr)
    if not episodes:
        raise ActionTokenizerError(f"{path} holds no arrays.")
    return episodes


def _load_shards(pattern: str) -> list[np.ndarray]:
    import webdataset as wds

    p = Path(pattern)
    if p.is_dir():
        urls = sorted(str(f) for f in p.glob("*.tar"))
    elif any(ch in pattern for ch in "*?[") and "{" not in pattern:
        urls = sorted(glob.glob(pattern))
    else:
        urls = [pattern] if "{" in pattern or p.is_file() else []
    if not urls:
        raise FileNotFoundError(f"--data {pattern}: no .npz file and no webdataset .tar shards found.")
    episodes, skipped = [], 0
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    for sample in dataset:
        raw = sample.get("actions.npy")
        if raw is None:
            skipped += 1
            continue
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
        if arr.ndim != 2:
            raise ActionTokenizerError(f"sample {sample.get('__key__')} in {sample.get('__url__')}: actions.npy must "
                                       f"be [T, D], got {arr.shape}.")
        episodes.append(arr)
    if skipped:
        print(f"skipped {skipped} samples without actions.npy", file=sys.stderr)
    if not episodes:
        raise ActionTokenizerError(f"--data {pattern}: no sample has actions.npy.")
    return episodes


# ----------------------------------------------------------------------------------------------------------------
# `unimask fit-actions`
# ----------------------------------------------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-actions", help="fit an action tokenizer (bins or FAST) on episodes and save it",
        description="Fit an action tokenizer on episodes from an .npz (`actions` [N, T, D] or one [T, D] array per "
                    "key) or webdataset shards (`actions.npy` per sample), save it, and print a summary.")
    parser.add_argument("--kind", choices=sorted(_KINDS), required=True, help="bins (OpenVLA-style) or fast (DCT+BPE)")
    parser.add_argument("--data", required=True, help=".npz file, or shard directory / glob / brace pattern / .tar")
    parser.add_argument("--out", required=True, help="output folder for action_tokenizer.json (+ fast_bpe.json)")
    parser.add_argument("--horizon", type=int, default=8, help="chunk length H in steps (default 8)")
    parser.add_argument("--stride", type=int, default=1, help="steps between chunk starts (default 1)")
    parser.add_argument("--pad", choices=PAD_MODES, default="last",
                        help="padding of chunks past the episode end: last (repeat), zeros, none (drop)")
    parser.add_argument("--norm", choices=NORM_MODES, default="quantile", help="quantile (q01/q99) or minmax bounds")
    parser.add_argument("--low-quantile", type=float, default=0.01)
    parser.add_argument("--high-quantile", type=float, default=0.99)
    parser.add_argument("--exclude-dims", type=int, nargs="*", default=[],
                        help="dimensions left unnormalised (already in [-1, 1], e.g. a gripper)")
    parser.add_argument("--bins", type=int, default=256, help="bins: number of bins (default 256)")
    parser.add_argument("--scale", type=float, default=10.0, help="fast: DCT coefficient scale (default 10)")
    parser.add_argument("--bpe-vocab-size", type=int, default=1024, help="fast: BPE vocabulary size (default 1024)")
    parser.add_argument("--length", type=int, default=None,
                        help="fast: report the fraction of chunks that fit this fixed token length")
    parser.add_argument("--max-eval-chunks", type=int, default=20000,
                        help="chunks used for the round-trip summary (a seeded random subset; default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation subset")
    parser.set_defaults(func=run_fit_actions)


def run_fit_actions(args: argparse.Namespace) -> int:
    episodes = load_episodes(args.data)
    chunks, valid = chunk_episodes(episodes, args.horizon, args.stride, args.pad)
    common = dict(norm=args.norm, low_quantile=args.low_quantile, high_quantile=args.high_quantile,
                  exclude_dims=args.exclude_dims)
    if args.kind == "bins":
        tokenizer: Any = BinActionTokenizer(n_bins=args.bins, **common)
    else:
        tokenizer = FASTActionTokenizer(scale=args.scale, bpe_vocab_size=args.bpe_vocab_size, **common)
    tokenizer.fit(chunks, valid)
    out = tokenizer.save_pretrained(args.out)

    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(chunks), size=min(len(chunks), args.max_eval_chunks), replace=False))
    sub, sub_valid = chunks[pick], valid[pick]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ActionClippingWarning)  # reported below as a number instead
        codes, enc = tokenizer.encode(sub, return_info=True)
    recon = tokenizer.decode(codes, dtype=np.float64)
    err = np.abs(recon - sub)[sub_valid]  # [n_valid_steps, D]
    summary: dict[str, Any] = {
        "kind": tokenizer.kind, "episodes": len(episodes), "chunks": int(len(chunks)), "horizon": args.horizon,
        "action_dim": tokenizer.action_dim, "vocab_size": tokenizer.vocab_size,
        "low": tokenizer.normalizer.low.tolist(), "high": tokenizer.normalizer.high.tolist(),
        "excluded_dims": tokenizer.normalizer.exclude_dims,
        "eval_chunks": int(len(sub)), "clipped_fraction": enc.clipped_fraction,
        "max_abs_error": err.max(axis=0).tolist(), "rms_error": np.sqrt((err ** 2).mean(axis=0)).tolist(),
    }
    if tokenizer.kind == "fast":
        counts = enc.tokens_per_chunk
        summary.update(mean_tokens_per_chunk=float(counts.mean()), max_tokens_per_chunk=int(counts.max()),
                       p99_tokens_per_chunk=int(np.quantile(counts, 0.99, method="higher")),
                       values_per_chunk=args.horizon * tokenizer.action_dim)
        if args.length is not None:
            summary.update(length=args.length, fraction_not_fitting=float((counts > args.length).mean()))
    atomic_write_text(Path(out) / "fit_summary.json", json.dumps(summary, indent=2))

    print(f"fitted a {tokenizer.kind} action tokenizer on {len(episodes)} episodes, {len(chunks)} chunks of "
          f"{args.horizon} x {tokenizer.action_dim}; vocab_size (UnifiedVocab.action_vocab_size) = "
          f"{tokenizer.vocab_size}")
    print(f"{'dim':>4} {'low':>11} {'high':>11} {'max|err|':>10} {'rms err':>10}")
    for d in range(tokenizer.action_dim):
        tag = "  (excluded)" if d in tokenizer.normalizer.exclude_dims else ""
        print(f"{d:>4} {summary['low'][d]:>11.5g} {summary['high'][d]:>11.5g} {summary['max_abs_error'][d]:>10.3g} "
              f"{summary['rms_error'][d]:>10.3g}{tag}")
    print(f"round trip on {len(sub)} chunks (real units, valid steps); clipped values: "
          f"{100 * enc.clipped_fraction:.2f}%")
    if tokenizer.kind == "fast":
        print(f"tokens per chunk: mean {summary['mean_tokens_per_chunk']:.2f}, p99 {summary['p99_tokens_per_chunk']},"
              f" max {summary['max_tokens_per_chunk']} (for {summary['values_per_chunk']} values)")
        if args.length is not None:
            print(f"fixed length {args.length}: {100 * summary['fraction_not_fitting']:.2f}% of chunks do not fit")
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from unimask.cli import main

    sys.exit(main(["fit-actions", *sys.argv[1:]]))
