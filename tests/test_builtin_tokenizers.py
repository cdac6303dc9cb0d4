"""The tokenizers shipped for the built-in data (`unimask builtin-tokenizers`) load from the installed package, and
work on that data: the text tokenizer round-trips captions and instructions, the VQ tokenizer reconstructs digits,
shapes scenes and Meta-World frames (the foresight target) at a stated quality."""

from __future__ import annotations

import json

import numpy as np
import torch

from unimask.tokenizers.image import VQImageTokenizer
from unimask.tokenizers.text import load_text_tokenizer
from unimask.training.builtin_tokenizers import builtin_folder
from unimask.training.samples import digit_scans, shapes_scenes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_the_shipped_tokenizers_say_how_they_were_made():
    build = json.loads((builtin_folder() / "build.json").read_text())
    assert build["command"].startswith("unimask builtin-tokenizers") and build["vq"]["codebook_usage"] > 0.9


def test_the_shipped_text_tokenizer_round_trips_the_built_in_texts():
    tokenizer = load_text_tokenizer(builtin_folder() / "text")
    for text in ("the digit seven", "two red circles left of a blue square", "open the drawer"):
        assert tokenizer.decode(tokenizer.encode(text)).strip() == text


def test_the_shipped_vq_reconstructs_the_images_a_model_writes():
    vq = VQImageTokenizer.from_pretrained(builtin_folder() / "vq")
    assert next(vq.model.parameters()).dtype == torch.float32  # stored in half precision, used in single
    images = [picture for _, picture in digit_scans((1, 4, 8), 64) + shapes_scenes(3, 64, seed=5)]
    again = (vq.reconstruct(images) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    # Held-out pictures (the build measured 27.7 dB on its own held-out set): 22 dB is a clearly working tokenizer;
    # an untrained one of the same architecture gives about 7 (these six pictures: 30.9 and 7.2).
    assert np.mean([psnr(a, b) for a, b in zip(images, again)]) > 22
