"""`unimask train --dry-run`: parameter count and per-rank memory of model, gradients and optimizer under ZeRO.

Bytes per parameter with AdamW: fp32 training keeps weights (4), gradients (4) and two moments (8); bf16 mixed
precision keeps bf16 weights (2) and gradients (2) plus an fp32 master copy and two moments (12). ZeRO-1 partitions
the optimizer state over the ranks, ZeRO-2 also the gradients, ZeRO-3 also the weights. Activations are not
included: they depend on batch size and sequence length.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


def per_rank_bytes(params: int, stage: int, world: int, bf16: bool) -> dict[str, float]:
    weights, grads, optim = (2, 2, 12) if bf16 else (4, 4, 8)
    share = lambda b, split: params * b / (world if split else 1)  # noqa: E731
    return {"weights": share(weights, stage >= 3), "gradients": share(grads, stage >= 2),
            "optimizer": share(optim, stage >= 1)}


def _vocab_size(config) -> tuple[int, str]:
    if all(Path(folder).is_dir() for folder in config.tokenizers.values()) and config.tokenizers:
        from unimask.processor import Processor

        return Processor.from_folders(config.tokenizers, config.sequence, config.model.encoders).vocab.size, "from the tokenizers"
    return 50_000, "assumed (tokenizer folders not found here)"


def print_estimate(config, world: int) -> None:
    vocab_size, source = _vocab_size(config)
    params = replace(config.model, vocab_size=vocab_size).num_parameters()
    stage = 0
    if config.train.deepspeed and Path(config.train.deepspeed).is_file():
        stage = int(json.loads(Path(config.train.deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0))
    bf16 = config.train.precision in ("bf16", "auto")
    print(f"parameters: {params / 1e6:.1f} M (vocabulary {vocab_size}, {source})")
    print(f"world size {world}, ZeRO stage {stage}, {'bf16 mixed' if bf16 else 'fp32'} precision "
          "(auto means bf16 on GPUs that have it)")
    for s in sorted({0, 1, 2, 3, stage}):
        parts = per_rank_bytes(params, s, world, bf16)
        total = sum(parts.values())
        detail = ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in parts.items())
        print(f"  ZeRO-{s}{' (configured)' if s == stage else ''}: {total / 2**30:.2f} GiB per rank ({detail})")
