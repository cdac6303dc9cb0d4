"""The base class of action tokenizers: fitted statistics, saving and loading, the decode-error policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from unimask.atomic import atomic_write_text, read_json

from .common import FORMAT_VERSION, ON_ERROR, SETTINGS_FILE, ActionTokenizerError, as_float_array, require_key
from .normalizer import ActionNormalizer


class ActionTokenizerBase:
    kind = ""

    def __init__(self, normalizer: ActionNormalizer) -> None:
        self.normalizer = normalizer

    @property
    def fitted(self) -> bool:
        return self.normalizer.fitted

    @property
    def action_dim(self) -> int:
        return self.normalizer.dim

    # ----- fixed-length chunk codes (what the unified model reads and writes) --------------------------------------
    def tokens_per_chunk(self, horizon: int, length: int | None = None) -> int:
        """Codes of one chunk of `horizon` steps in the model's sequence (`length`: a fixed length, when the
        tokenizer's codes vary in number)."""
        raise NotImplementedError

    def encode_chunks(self, chunks: Any, length: int | None = None) -> np.ndarray:
        """int64 codes [N, tokens_per_chunk] of chunks [N, H, D]."""
        raise NotImplementedError

    def decode_chunks(self, codes: Any, horizon: int, **decode_options: Any) -> np.ndarray:
        """Actions [N, H, D] in real units from codes [N, tokens_per_chunk]."""
        raise NotImplementedError

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
    def from_pretrained(cls, directory: str | Path) -> "ActionTokenizerBase":
        data = read_settings(directory)
        if data["kind"] != cls.kind:
            raise ActionTokenizerError(f"{directory} holds a {data['kind']!r} action tokenizer, not {cls.kind!r}; "
                                       "use load_action_tokenizer(dir) to get the right class.")
        tokenizer = cls._from_settings(data, Path(directory))
        if tokenizer.vocab_size != data["vocab_size"]:
            raise ActionTokenizerError(f"{directory}: saved vocab_size {data['vocab_size']} disagrees with the "
                                       f"settings ({tokenizer.vocab_size}); the file is corrupt.")
        return tokenizer

    @classmethod
    def _from_settings(cls, data: dict[str, Any], directory: Path) -> "ActionTokenizerBase":
        raise NotImplementedError

    @staticmethod
    def _check_on_error(on_error: str, hold_action: Any, dim: int) -> np.ndarray | None:
        if on_error not in ON_ERROR:
            raise ActionTokenizerError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        if on_error == "hold":
            if hold_action is None:
                raise ActionTokenizerError("`on_error='hold'` needs `hold_action` (the action to repeat, [D] or "
                                           "[N, D] in real units, e.g. the last executed action).")
            hold = as_float_array(hold_action, "hold_action")
            if hold.shape[-1] != dim:
                raise ActionTokenizerError(f"`hold_action` must end with the action dimension {dim}, got {hold.shape}.")
            return hold
        return None


def read_settings(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / SETTINGS_FILE
    data = read_json(path, ActionTokenizerError, "a saved action tokenizer")
    for key in ("kind", "format_version", "vocab_size", "settings", "normalizer"):
        require_key(data, key, str(path))
    if data["format_version"] != FORMAT_VERSION:
        raise ActionTokenizerError(f"{path} has format_version {data['format_version']}, this unimask reads "
                                   f"{FORMAT_VERSION}.")
    return data
