"""Checks of the training step that only a CUDA GPU can make; prints one line per check and exits non-zero if any
fails.

    python benchmarks/gpu_checks.py            # (--cpu: only the checks a CPU can make)

- no host synchronisation: three training steps (masking, model, loss, backward, clipped fused-AdamW step, the
  trainer's device-side metrics) run under `torch.cuda.set_sync_debug_mode("error")`, which raises on any operation
  that makes the host wait for the device;
- a non-finite loss skips the optimizer step on the device (weights and moments unchanged);
- flex attention (block masks from the segments) equals the masked SDPA path, forward and backward, in bf16;
- the compiled model gives the eager step's loss.
"""

from __future__ import annotations

import sys
import traceback

import torch

from train_throughput import synthetic_model_and_batches
from unimask.masking import MaskingConfig, diffusion_step
from unimask.registry import tasks
from unimask.training.engines import TorchEngine, fused_adamw
from unimask.training.step import train_step
from unimask.training.window import LogWindow

# `--cpu` runs the checks that a CPU can make (the skip and the compiled step), to try the script before a GPU run.
DEVICE = torch.device("cpu" if "--cpu" in sys.argv else "cuda")


def engine_for(model):
    optimizer = fused_adamw([{"params": list(model.parameters()), "weight_decay": 0.01}], 1e-3, (0.9, 0.98))
    return TorchEngine(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), 1.0, 1, 1,
                       DEVICE)


def check_no_host_sync() -> str:
    vocab, model, batches = synthetic_model_and_batches("quick", 64, DEVICE)
    batches = [batch.pin_memory() for batch in batches]  # as the trainer's loader gives them on a GPU
    engine, window = engine_for(model), LogWindow(list(tasks()), DEVICE)
    masking, generator = MaskingConfig(full_mask={"vla": 0.5}), torch.Generator(device=DEVICE).manual_seed(0)

    def step(batch):
        result, _ = train_step(engine, batch.to(DEVICE, non_blocking=True), vocab, masking, generator,
                               torch.bfloat16 if DEVICE.type == "cuda" else None)
        window.add_micro_batch(result, batch.input_ids.numel(), 0.0)
        window.add_step(engine.last_grad_norm, engine.last_skipped)

    step(batches[0])  # first calls build cached tables and kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:4]:
            step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return f"3 steps queued with no host synchronisation; loss {window.read()['loss']:.3f}"


def check_nonfinite_skip() -> str:
    vocab, model, batches = synthetic_model_and_batches("quick", 8, DEVICE)
    engine = engine_for(model)
    loss = diffusion_step(engine, batches[0].to(DEVICE), vocab, MaskingConfig()).loss
    engine.backward(loss)
    engine.step()  # a real step, so the moments exist
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.backward(diffusion_step(engine, batches[1].to(DEVICE), vocab, MaskingConfig()).loss * float("nan"))
    engine.step()
    assert bool(engine.last_skipped), "a NaN loss did not mark the step skipped"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"a skipped step changed {changed[:3]}"
    return "a NaN loss leaves every weight unchanged and marks the step skipped"


def check_flex_equals_sdpa() -> str:
    vocab, model, batches = synthetic_model_and_batches("quick", 16, DEVICE)
    batch = batches[0].to(DEVICE)
    outputs = {}
    for kernel in ("sdpa", "flex"):
        model.zero_grad(set_to_none=True)
        model.attention_kernel = kernel
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(batch.input_ids, segment_ids=batch.segment_ids, position_ids=batch.position_ids,
                           features=batch.features).logits
        valid = batch.segment_ids != 0
        logits[valid].float().square().mean().backward()
        outputs[kernel] = (logits[valid].float(), model.blocks[0].attn.q_proj.weight.grad.float())
    (a, ga), (b, gb) = outputs["sdpa"], outputs["flex"]
    error, grad_error = ((a - b).norm() / a.norm()).item(), ((ga - gb).norm() / ga.norm()).item()
    assert error < 2e-2 and grad_error < 5e-2, (error, grad_error)
    return f"flex vs sdpa, bf16: relative error logits {error:.1e}, gradients {grad_error:.1e}"


def check_compiled_equals_eager() -> str:
    vocab, model, batches = synthetic_model_and_batches("quick", 16, DEVICE)
    batch = batches[0].to(DEVICE)
    # Compiled code draws random numbers with its own generator: compare without the pixel encoder's random shifts.
    model.encoders["pixels"].config.shift = 0
    eager = diffusion_step(model, batch, vocab, MaskingConfig(), torch.Generator(DEVICE).manual_seed(1)).loss
    model.compile()
    model.attention_kernel = "flex" if DEVICE.type == "cuda" else "sdpa"
    compiled = diffusion_step(model, batch, vocab, MaskingConfig(), torch.Generator(DEVICE).manual_seed(1)).loss
    assert abs(compiled.item() - eager.item()) < 1e-3 * abs(eager.item()), (compiled.item(), eager.item())
    return f"compiled (flex) loss {compiled.item():.5f}, eager (sdpa) {eager.item():.5f}"


def main() -> int:
    failed = 0
    checks = [check_no_host_sync, check_nonfinite_skip, check_flex_equals_sdpa, check_compiled_equals_eager]
    for check in checks if DEVICE.type == "cuda" else [check_nonfinite_skip, check_compiled_equals_eager]:
        try:
            print(f"PASS {check.__name__}: {check()}", flush=True)
        except Exception:  # noqa: BLE001 - report every check, then fail
            failed += 1
            print(f"FAIL {check.__name__}:\n{traceback.format_exc()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
