"""Training-step throughput, MFU and where the time goes, on whatever device is present.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py                      # CPU: the quick model
    python benchmarks/train_throughput.py --models quick,25m,90m --compile       # a GPU: bf16, compiled
    python benchmarks/train_throughput.py --models 90m --shape seq256 --deepspeed configs/deepspeed/zero2.json

It runs the trainer's own step (`unimask.training.step.train_step`: masking, model, ELBO loss, backward, the engine's
clipped fused-AdamW step, with the trainer's `StepTimer` and `LogWindow`) on batches built from the task templates
with random codes, already in (pinned) memory, so the loader is not measured here (`benchmarks/loader_throughput.py`
measures it; the trainer's metrics show it as `time/data`). Shapes:

- `quick`: the quick recipe's mix of rows (text to image with 64 image codes, captions and robot actions read from
  16 pixel-encoder tokens), padded to the longest row (about 90 positions).
- `seq256`: text-to-image rows of exactly 256 positions (a 12-token prompt and 240 image codes).

Models: `quick` (d_model 128 x 4 layers, 1 M parameters, the pixel encoder), `25m` (512 x 8), `90m` (768 x 12).
MFU is the step's FLOPs (`unimask.training.utilization.step_flops`) per second over the peak of the same device
and precision measured in the same run (a bf16 8192^2 matmul on a GPU, fp32 2048^2 on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.registry import get_modality, get_task, tasks
from unimask.sequence import SequenceBuilder, collate
from unimask.training.engines import DeepSpeedEngine, TorchEngine, deepspeed_config, fused_adamw, init_distributed
from unimask.training.step import train_step
from unimask.training.timing import StepTimer
from unimask.training.utilization import peak_flops, step_flops
from unimask.training.window import LogWindow
from unimask.vocab import UnifiedVocab

PIXELS = {"resolution": 64, "tokens": 16, "channels": [32, 64, 128], "shift": 4}
MODELS = {"quick": dict(d_model=128, n_layers=4, n_heads=4), "25m": dict(d_model=512, n_layers=8, n_heads=8),
          "90m": dict(d_model=768, n_layers=12, n_heads=12)}
SIZES = {"image": 512, "action": 256, "state": 64, "pixels": 1}


def synthetic_batches(shape: str, batch_size: int, count: int, seed: int = 0) -> tuple[UnifiedVocab, list]:
    """`count` different batches of one shape (see the module docstring), on the CPU."""
    vocab = UnifiedVocab(text_size=512, modalities=SIZES)
    image_codes = 64 if shape == "quick" else 240
    builder = SequenceBuilder(vocab, {n: get_modality(n) for n in ("text", *SIZES)},
                              {"image": image_codes, "action": 32, "state": 4, "pixels": 16}, caption_length=24,
                              max_condition_text=24)
    g = torch.Generator().manual_seed(seed)
    codes = lambda high, n: torch.randint(0, high, (n,), generator=g)  # noqa: E731
    pixels = lambda: torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)  # noqa: E731
    mix = ["t2i", "i2t", "t2i", "i2t", "vla", "vla", "t2i"] if shape == "quick" else ["t2i"]
    batches = []
    for _ in range(count):
        rows = []
        for row in range(batch_size):
            task = mix[int(torch.randint(0, len(mix), (1,), generator=g))]
            if task == "t2i":
                rows.append(builder.build(get_task("t2i"), [codes(512, 12 if shape != "quick" else 8),
                                                            codes(512, image_codes)]))
            elif task == "i2t":
                template = get_task("i2t").replace_condition("image", "pixels")
                rows.append(builder.build(template, [codes(1, 16), codes(512, 10)], {"pixels": pixels()}))
            else:
                template = get_task("vla").replace_condition("image", "pixels")
                rows.append(builder.build(template, [codes(1, 16), codes(512, 8), codes(64, 4), codes(256, 32)],
                                          {"pixels": pixels()}))
        batches.append(collate(rows, vocab.pad_id, pad_to_multiple_of=8))
    return vocab, batches


def synthetic_model_and_batches(model_name: str, batch_size: int, device: torch.device, shape: str = "quick",
                                count: int = 4) -> tuple[UnifiedVocab, MaskedDiffusionTransformer, list]:
    """A freshly initialised model of `MODELS[model_name]` on `device` and `count` CPU batches of `shape`."""
    vocab, batches = synthetic_batches(shape, batch_size, count)
    encoders = {"pixels": {**PIXELS, "id": vocab.range_of("pixels")[0]}} if shape == "quick" else {}
    config = MaskedDiffusionConfig(vocab_size=vocab.size, max_seq_len=256, encoders=encoders, **MODELS[model_name])
    torch.manual_seed(0)
    return vocab, MaskedDiffusionTransformer(config).to(device), batches


def measure(model_name: str, shape: str, batch_size: int, steps: int, warmup: int, device: torch.device,
            deepspeed: str, compile_mode: str, attention: str, precision: str = "auto") -> dict:
    vocab, model, batches = synthetic_model_and_batches(model_name, batch_size, device, shape)
    config, encoders = model.config, model.config.encoders
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    model.attention_kernel = attention
    if compile_mode:
        model.compile(mode=None if compile_mode == "default" else compile_mode)
    optimizer = fused_adamw([{"params": list(model.parameters()), "weight_decay": 0.01}], 1e-4, (0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    if deepspeed:
        engine = DeepSpeedEngine(model, optimizer, scheduler,
                                 deepspeed_config(deepspeed, batch_size, 1, 1.0, bf16, 1))
    else:
        engine = TorchEngine(model, optimizer, scheduler, 1.0, 1, 1, device)
    if device.type == "cuda":
        batches = [b.pin_memory() for b in batches]
    masking = MaskingConfig(full_mask={"vla": 0.5})
    generator = torch.Generator(device=device).manual_seed(0)
    window, timer = LogWindow(list(tasks()), device), StepTimer(device)
    autocast = torch.bfloat16 if bf16 and not deepspeed else None

    def step(i: int) -> None:
        timer.start()
        batch = batches[i % len(batches)].to(device, non_blocking=True)
        timer.mark("data")
        result, _ = train_step(engine, batch, vocab, masking, generator, autocast, timer)
        window.add_micro_batch(result, batch.input_ids.numel(), step_flops(config, *batch.input_ids.shape, {
            "pixels": sum(task != "t2i" for task in batch.tasks)} if encoders else {}))
        window.add_step(engine.last_grad_norm, engine.last_skipped)

    start = time.perf_counter()
    for i in range(warmup):
        step(i)
    window.read()
    timer.split(1)
    warm_seconds = time.perf_counter() - start
    for i in range(steps):
        step(i)
    read = window.read()
    split = timer.split(steps)
    seconds = split["time/step"] * steps
    peak = peak_flops(device, torch.bfloat16 if bf16 else torch.float32)
    return {"model": model_name, "parameters": sum(p.numel() for p in model.parameters()), "shape": shape,
            "batch": batch_size, "positions": int(batches[0].input_ids.shape[1]), "device": str(device),
            "precision": "bf16" if bf16 else "fp32", "engine": "deepspeed " + deepspeed if deepspeed else "torch",
            "compile": compile_mode or "off", "attention": attention, "threads": torch.get_num_threads(),
            "steps_per_s": steps / seconds, "tokens_per_s": read["tokens"] / seconds,
            "mfu": read["flops"] / seconds / peak, "peak_tflops": peak / 1e12, "warmup_s": warm_seconds,
            "loss": read["loss"], **{k: 1000 * v for k, v in split.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="quick", help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--shape", choices=("quick", "seq256"), default="quick")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--deepspeed", default="", help="a DeepSpeed JSON, e.g. configs/deepspeed/zero2.json")
    parser.add_argument("--compile", default="", help="torch.compile mode (default, reduce-overhead, ...); off if empty")
    parser.add_argument("--attention", choices=("sdpa", "math", "flex"), default="sdpa")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on a GPU that has it, fp32 elsewhere (train.precision's rule)")
    parser.add_argument("--json", default="", help="append each result as a JSON line to this file")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.deepspeed:
        os.environ.setdefault("DS_ACCELERATOR", device.type)
        init_distributed(True)
    columns = ("model", "parameters", "batch", "positions", "precision", "engine", "compile", "attention",
               "steps_per_s", "tokens_per_s", "mfu", "time/data", "time/forward", "time/backward", "time/optimizer")
    print("| " + " | ".join(columns) + " | time/idle or other (ms) |")
    print("|" + "---|" * (len(columns) + 1))
    for name in args.models.split(","):
        result = measure(name, args.shape, args.batch, args.steps, args.warmup, device, args.deepspeed, args.compile,
                         args.attention, args.precision)
        rest = result.get("time/idle", result.get("time/other"))
        cells = [f"{result[c]:.3g}" if isinstance(result[c], float) else str(result[c]) for c in columns]
        print("| " + " | ".join(cells) + f" | {rest:.3g} |", flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
