"""Training throughput and MFU on this machine, next to the fp32 matmul peak measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py

For the model shapes of configs/tiny-cpu.yaml and configs/small-cpu.yaml it times full training steps (masking,
forward, ELBO loss, backward, AdamW) on vla-shaped batches (160 tokens per sequence, batch 32) and reports tokens/s
and MFU = tokens/s * 6 * parameters / peak, where the peak is the FLOP/s of a 2048 x 2048 fp32 matmul on the same
threads. It also prints the per-rank memory of weights, gradients and optimizer state under ZeRO-1/2/3 with 2 ranks
(computed from the parameter count, fp32 AdamW: 4 + 4 + 8 bytes per parameter).
"""

from __future__ import annotations

import time

import torch

from unimask.masking import MaskingConfig, train_step
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.registry import get_modality, get_task
from unimask.sequence import SequenceBuilder, collate
from unimask.training.engines import TorchEngine
from unimask.training.memory import per_rank_bytes
from unimask.training.trainer import measure_matmul_peak
from unimask.vocab import UnifiedVocab

SHAPES = {"tiny-cpu": dict(d_model=128, n_layers=4, n_heads=4), "small-cpu": dict(d_model=256, n_layers=6, n_heads=8)}


def main(batch_size: int = 32, steps: int = 8) -> None:
    sizes = {"image": 512, "action": 256, "state": 64}
    vocab = UnifiedVocab(text_size=512, modalities=sizes)
    lengths = {"image": 64, "action": 32, "state": 4}
    builder = SequenceBuilder(vocab, {name: get_modality(name) for name in ("text", *sizes)}, lengths)
    g = torch.Generator().manual_seed(0)
    vla = get_task("vla")
    sequences = [builder.build(vla, [torch.randint(0, 512, (64,), generator=g), torch.randint(0, 512, (12,), generator=g),
                                     torch.randint(0, 64, (4,), generator=g), torch.randint(0, 256, (32,), generator=g)])
                 for _ in range(batch_size)]
    batch = collate(sequences, pad_id=vocab.pad_id, pad_to_multiple_of=16)
    peak = measure_matmul_peak()
    print(f"threads {torch.get_num_threads()}, fp32 matmul peak (2048^2): {peak / 1e9:.1f} GFLOP/s, "
          f"{batch.input_ids.numel()} tokens per step")
    print("| config | parameters | tokens/s | MFU |")
    print("|---|---|---|---|")
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=vocab.size, max_seq_len=256, **shape))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        engine = TorchEngine(model, optimizer, schedule, grad_clip=1.0, grad_accum=1, world=1, device=model.device)
        masking = MaskingConfig()

        def step() -> None:
            train_step(engine, batch, vocab, masking, g)

        step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        tokens_per_s = steps * batch.input_ids.numel() / (time.perf_counter() - start)
        params = model.num_parameters()
        mfu = tokens_per_s * 6 * params / peak
        print(f"| {name} | {params / 1e6:.2f} M | {tokens_per_s:,.0f} | {mfu:.1%} |")
        for stage in (1, 2, 3):
            parts = per_rank_bytes(params, stage, 2, bf16=False)
            print(f"|   ZeRO-{stage}, 2 ranks | per rank: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items())
                  + " | | |")


if __name__ == "__main__":
    main()
