"""Pixels: an image read by an encoder inside the model (a condition such as the caption source or the robot
observation), not through the VQ codebook.

The "tokenizer" only prepares pixels: centre-crop to a square and resize (antialiased bilinear, as the VQ tokenizer
does) to the encoder's resolution, kept as uint8 (3, R, R). It remembers how many tokens the encoder writes, so a
sequence reserves that many placeholder positions. Both numbers come from the model config's encoder entry; the
preprocessor is saved in the bundle (`pixels_tokenizer/`) so inference prepares pixels exactly as training did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from unimask.atomic import atomic_write_text, read_json
from unimask.modality import Modality, SampleError, decode_image, decode_npy

from .image import to_tensor_batch

SETTINGS_FILE = "pixels.json"


class PixelPreprocessor:
    def __init__(self, resolution: int = 64, tokens: int = 16):
        if resolution < 8 or tokens < 1:
            raise ValueError(f"`resolution` must be >= 8 and `tokens` >= 1, got {resolution} and {tokens}.")
        self.resolution, self.tokens = int(resolution), int(tokens)

    @property
    def num_tokens(self) -> int:
        return self.tokens

    def encode(self, images: Any) -> torch.Tensor:
        """uint8 (B, 3, R, R) from PIL images, uint8 arrays [H, W, 3] or float tensors [3, H, W] in [0, 1]."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        ready = (self.resolution, self.resolution, 3)
        if all(isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.shape == ready for im in images):
            return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # already the right size
        return (to_tensor_batch(images, self.resolution) * 255).round().to(torch.uint8)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / SETTINGS_FILE, json.dumps({"resolution": self.resolution,
                                                                 "tokens": self.tokens}))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "PixelPreprocessor":
        settings = read_json(Path(directory) / SETTINGS_FILE, ValueError, "a pixel preprocessor's settings")
        return cls(**settings)


class PixelModality(Modality):
    """An image condition as continuous encoder tokens (one placeholder id in the vocabulary)."""

    name = "pixels"
    raw_keys = ("png", "jpg")
    # Pre-tokenized: the prepared uint8 (3, R, R) array itself, so training decodes no PNG in its hot path.
    codes_key = "pixels.npy"
    continuous = True
    delimiters = ("soi", "eoi")

    def load_tokenizer(self, directory: Any) -> PixelPreprocessor:
        return PixelPreprocessor.from_pretrained(directory)

    def tokenizer_for(self, encoder: dict[str, Any]) -> PixelPreprocessor:
        """The preprocessor matching a model config's encoder entry."""
        return PixelPreprocessor(encoder.get("resolution", 64), encoder.get("tokens", 16) + encoder.get("keypoints", 0))

    def encode(self, tokenizer: PixelPreprocessor, values: Sequence[Any], settings: Any = None) -> list[torch.Tensor]:
        return list(tokenizer.encode(list(values)))

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> np.ndarray:
        return decode_image(raw.get("png") or raw["jpg"])

    def read_codes(self, data: bytes) -> np.ndarray:
        pixels = decode_npy(data)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[0] != 3:
            raise SampleError("bad_shape", f"pixels.npy must be uint8 (3, R, R), got {pixels.dtype} {pixels.shape}")
        return pixels

    def codes_entry(self, codes: Any) -> np.ndarray:
        return np.asarray(codes, dtype=np.uint8)
