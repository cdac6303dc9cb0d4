"""FAST: DCT along time, scale and round, low frequencies first, characters, byte-level BPE."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.fft import dct, idct

from unimask.atomic import atomic_write

from .base import ActionTokenizerBase
from .common import (BPE_FILE, SETTINGS_FILE, ActionClippingWarning, ActionDecodeError, ActionTokenizerError, DecodeInfo,
                     EncodeInfo, as_float_array, as_int_array, require_key, warn_clipping)
from .normalizer import ActionNormalizer

# Code points from U+D800 are UTF-16 surrogates and cannot be written as UTF-8, so the FAST alphabet stops below.
_MAX_SYMBOL = 0xD7FF


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


class FASTActionTokenizer(ActionTokenizerBase):
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
        x = as_float_array(chunks, "chunks")
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
        x = as_float_array(chunks, "chunks")
        single = x.ndim == 2
        x = self._chunks(x)
        strings, per_dim = self._to_strings(x)
        n_clipped = int(per_dim.sum())
        warn_clipping("FASTActionTokenizer.encode", n_clipped, x.size, per_dim)
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
            arr = as_int_array(codes, "codes")
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

    def tokens_per_chunk(self, horizon: int, length: int | None = None) -> int:
        if not length:
            raise ActionTokenizerError("FAST codes vary in number per chunk: the model needs a fixed `length` "
                                       "(sequence.action_length; choose it with suggest_length).")
        return length

    def encode_chunks(self, chunks: Any, length: int | None = None) -> np.ndarray:
        return self.encode(chunks, length=self.tokens_per_chunk(self.horizon or 0, length))

    def decode_chunks(self, codes: Any, horizon: int, **decode_options: Any) -> np.ndarray:
        if horizon != self.horizon:
            raise ActionTokenizerError(f"this FAST tokenizer was fitted on horizon {self.horizon}, not {horizon}.")
        return self.decode(as_int_array(codes, "codes"), **decode_options)

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
        tokenizer = cls(scale=require_key(s, "scale", where), bpe_vocab_size=require_key(s, "bpe_vocab_size", where),
                        min_frequency=require_key(s, "min_frequency", where))
        horizon = require_key(s, "horizon", where)
        if not isinstance(horizon, int) or horizon < 1:
            raise ActionTokenizerError(f"{where}.horizon must be an integer >= 1, got {horizon!r}.")
        tokenizer.normalizer = ActionNormalizer.from_dict(data["normalizer"], f"{directory / SETTINGS_FILE}:normalizer")
        tokenizer.horizon = horizon
        tokenizer._check_alphabet()
        bpe_path = directory / require_key(s, "bpe_file", where)
        if not bpe_path.is_file():
            raise FileNotFoundError(f"the FAST tokenizer in {directory} needs its BPE file {bpe_path.name}, which is "
                                    "missing; copy the whole folder written by save_pretrained.")
        tokenizer._set_bpe(Tokenizer.from_file(str(bpe_path)))
        return tokenizer
