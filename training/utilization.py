"""Model FLOPs utilisation, honestly: the model's FLOPs over the training device's own peak for the precision it
trains in.

- `peak_flops(device, dtype)` times a large matrix product on that device in that dtype (bf16 on a GPU that trains in
  bf16, fp32 on a CPU), once per process. A peak timed on the CPU says nothing about a GPU.
- `step_flops(config, batch)` counts a training step's FLOPs from the shapes: 6 per parameter of every matrix
  product a token goes through (forward 2, backward 4; the tied output projection included, the embedding lookup
  not), attention's scores and weighted sums (12 * layers * d_model * attended length per token, forward and
  backward), and the pixel encoder's convolutions for every row that reads pixels. Padding positions are computed
  like the others and counted too. `tests/test_utilization.py` checks the count against PyTorch's FlopCounterMode.
"""

from __future__ import annotations

import time
from typing import Any

import torch

_PEAKS: dict[tuple[str, torch.dtype], float] = {}


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large square matrix product in `dtype` on `device` (8192 on a GPU, 2048 on a CPU, on this
    process's threads): the fastest of several, measured once per process."""
    device = torch.device(device)
    key = (str(device), dtype)
    if key not in _PEAKS:
        size, repeats = (8192, 10) if device.type == "cuda" else (2048, 5)
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)
        for _ in range(3):
            a @ b
        # The best of several timed products: another process on the same cores slows some of them down, and the
        # peak is what the device can do, not what it did while shared.
        best = 0.0
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
        _PEAKS[key] = best
    return _PEAKS[key]


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bf16 matrices natively: a GPU that supports bf16, or a CPU with AVX512-BF16 or AMX
    (there bf16 matrix products ran 2-4x faster than fp32 ones, `benchmarks/train_throughput.py --precision`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def matmul_parameters(config: Any) -> int:
    """Weights of the matrix products one token goes through: attention and MLP projections and the output
    projection (`MaskedDiffusionConfig`)."""
    kv = config.n_kv_heads * config.head_dim
    per_layer = config.d_model * (2 * config.d_model + 2 * kv) + 3 * config.d_model * config.ffn_hidden
    return config.n_layers * per_layer + config.vocab_size * config.d_model


def encoder_step_flops(spec: dict[str, Any], d_model: int) -> float:
    """Training-step FLOPs (forward and backward) of one image through a `ConvPixelEncoder` of these settings: every
    convolution 3 times its forward FLOPs, but the first, whose input (the pixels) needs no gradient, twice."""
    side, width, forward = spec.get("resolution", 64), 3, []
    for i, channels in enumerate(spec.get("channels", [32, 64, 128])):
        kernel = 4 if i == 0 else 3
        side = (side + 2 - kernel) // 2 + 1
        forward.append(2 * side * side * channels * width * kernel * kernel)
        width = channels
    forward.append(2 * side * side * d_model * width)
    forward.append(2 * 2 * width * spec.get("keypoints", 0) * d_model)  # the keypoint tokens' linear map
    return 3 * sum(forward) - forward[0]


def step_flops(config: Any, rows: int, length: int, encoded: dict[str, int] | None = None) -> float:
    """FLOPs of one training step (forward and backward) of a model with `config` on `rows` sequences of `length`
    positions, `encoded[name]` of which read the continuous input `name` through its encoder."""
    per_token = 6 * matmul_parameters(config) + 12 * config.n_layers * config.d_model * length
    encoders = sum(encoder_step_flops(config.encoders[name], config.d_model) * count
                   for name, count in (encoded or {}).items())
    return float(per_token * rows * length + encoders)


def encoded_rows(processor: Any, tasks: list[str]) -> dict[str, int]:
    """How many of a batch's rows (given by task) read each continuous input, as the processor lays tasks out."""
    from collections import Counter

    from unimask.registry import get_modality

    counts: Counter[str] = Counter()
    for task, rows in Counter(tasks).items():
        for segment in processor.template(task).condition:
            if get_modality(segment.modality).continuous:
                counts[segment.modality] += rows
    return dict(counts)


def mfu(flops_per_second: float, peak: float) -> float:
    """Achieved over peak, at most 1: a figure above 1 means the peak was measured too low, and says nothing."""
    return min(1.0, flops_per_second / peak) if peak > 0 else 0.0
