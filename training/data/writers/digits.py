"""The `digits` dataset: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, no download), captioned.

Images are 8x8 grey levels 0..16 scaled to 0..255 (white ink on black) and upscaled to `image_size` (default 64)
with bilinear interpolation by default (`resize="nearest"` keeps the blocky 8x8 cells instead). Bilinear is the
default because smooth strokes give a VQ tokenizer varied patches to learn; nearest upscaling turns every 8x8 cell
into one flat grey block. Images are stored as RGB (grey replicated) so every built-in dataset has 3 channels.

The test split is a fixed-seed stratified hold-out: `ceil(test_fraction * n)` images of every digit class.
Each sample feeds `t2i` and `i2t`; `txt` holds one caption, `json.captions` all caption paraphrases.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimask.errors import check_number

from ..format import MAX_IMAGE_SIZE, DataError, DatasetWriter, content_hash, make_sample

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit}",
    "a handwritten digit {digit}",
    "the number {word}",
    "a picture of the digit {word}",
    "the handwritten number {digit}",
)
RESIZE_MODES = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}


def digit_captions(label: int) -> list[str]:
    return [t.format(word=DIGIT_WORDS[label], digit=label) for t in CAPTION_TEMPLATES]


def upscale_digit(pixels: np.ndarray, image_size: int, resize: str = "bilinear") -> np.ndarray:
    """uint8 [S, S, 3] image from one 8x8 array of 0..16 grey levels."""
    if resize not in RESIZE_MODES:
        raise DataError(f"`resize` must be one of {sorted(RESIZE_MODES)}, got {resize!r}.")
    grey = np.rint(np.asarray(pixels, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(grey, "L")
    if image_size != grey.shape[0]:
        image = image.resize((image_size, image_size), RESIZE_MODES[resize])
    return np.asarray(image.convert("RGB"))


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Bool mask of test samples: `ceil(test_fraction * n_class)` random samples of each class (fixed seed)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.permutation(members)[: math.ceil(test_fraction * len(members))]
        is_test[chosen] = True
    return is_test


def write_digits(out: str | Path, *, image_size: int = 64, resize: str = "bilinear", test_fraction: float = 0.2,
                 seed: int = 0, shard_size: int = 200, limit: int | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """Write the digits dataset to `out`; returns the card. `limit` keeps only the first N images (for tests)."""
    from sklearn.datasets import load_digits

    check_number("image_size", image_size, 8, MAX_IMAGE_SIZE, integer=True, fix="the source is 8x8", error=DataError)
    started = time.time()
    digits = load_digits()
    images, labels = digits.images, digits.target.astype(int)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    is_test = split_indices(labels, test_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    with DatasetWriter(out, "digits", maxcount=shard_size, started=started) as writer:
        for index, (pixels, label) in enumerate(zip(images, labels)):
            image = upscale_digit(pixels, image_size, resize)
            captions = digit_captions(int(label))
            split = "test" if is_test[index] else "train"
            meta = {"source": "digits", "tasks": ["t2i", "i2t"], "index": index, "label": int(label),
                    "captions": captions, "split": split}
            sample = make_sample(f"digits-{index:05d}", image=image,
                                 text=captions[int(rng.integers(len(captions)))], meta=meta)
            writer.write(split, sample, image_hash=content_hash(image))
        overlap = writer.hashes["train"] & writer.hashes["test"]
        if overlap:
            raise DataError(f"{len(overlap)} identical images landed in both splits; this should not happen.")
        return writer.finish({
            "source": "digits",
            "description": "scikit-learn load_digits (UCI optical recognition of handwritten digits), captioned",
            "seed": seed,
            "image_size": [image_size, image_size],
            "resize": resize,
            "test_fraction": test_fraction,
            "tasks": ["t2i", "i2t"],
            "templates": list(CAPTION_TEMPLATES),
            "classes": list(DIGIT_WORDS),
            "action_dim": None,
            "state_dim": None,
            "command": command,
        })
