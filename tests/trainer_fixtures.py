"""A tiny but complete training set-up (data, tokenizers, config) for the trainer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml


def make_setup(root: Path) -> dict:
    from unimask.tokenizers.action import BinActionTokenizer
    from unimask.tokenizers.image import VQImageTokenizer, build_vqmodel
    from unimask.tokenizers.text import train_text_tokenizer
    from unimask.training.data.writers.digits import DIGIT_WORDS, write_digits

    root.mkdir(parents=True, exist_ok=True)
    write_digits(root / "digits", image_size=32, limit=300, shard_size=50)
    texts = [f"the digit {w}" for w in DIGIT_WORDS] + [f"a handwritten {w}" for w in DIGIT_WORDS] + ["the digit 7"]
    train_text_tokenizer(texts * 3, vocab_size=300, out_dir=root / "text")
    torch.manual_seed(0)
    VQImageTokenizer(build_vqmodel(32, (8, 16, 16), latent_channels=4, codebook_size=32,
                                   norm_num_groups=4)).save_pretrained(root / "vq")
    BinActionTokenizer(n_bins=16).fit(np.random.default_rng(0).uniform(-1, 1, (50, 4))).save_pretrained(root / "act")
    return {"root": root}


def write_config(root: Path, out: Path, deepspeed: str = "", steps: int = 12, **train) -> Path:
    config = {
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 96},
        "tokenizers": {"text": str(root / "text"), "image": str(root / "vq"), "action": str(root / "act")},
        "sequence": {"caption_length": 24, "max_condition_text": 24, "action_horizon": 2, "action_dim": 4},
        "data": {"streams": [{"dataset": str(root / "digits"), "task": "i2t", "weight": 1.0},
                             {"dataset": str(root / "digits"), "task": "t2i", "weight": 1.0}],
                 "batch_size": 8, "shuffle_buffer": 50, "seed": 0},
        "optim": {"lr": 3e-3, "warmup": 2},
        "train": {"out": str(out), "steps": steps, "log_every": 2, "checkpoint_every": 6, "keep_last": 2,
                  "deepspeed": deepspeed, "peak_flops": 1e11, **train},
    }
    path = out.parent / f"{out.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path
