"""The trainer behind `unimask train`: one MaskedDiffusionTransformer on a weighted mix of tasks, from one CPU process
to many GPUs and nodes.

    config -> Trainer(config) -> trainer.train() -> trainer.export(dir)

Each step: batch from the webdataset loader -> forward process (masking) -> model -> ELBO loss -> engine backward/step.
The run folder holds `config.yaml` (resolved), `vocab.json`, `checkpoints/`, `tensorboard/`, `samples/` and
`metrics.jsonl`. Resume restores the model, optimizer, LR schedule, the masking generator and the data position
(the loader is deterministic from the seed; the batches already consumed are skipped).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unimask.atomic import atomic_torch_save, atomic_write_text
from unimask.bundle import Bundle
from unimask.config import save_config
from unimask.model import MaskedDiffusionTransformer
from unimask.processor import Processor
from unimask.registry import tasks
from unimask.training.checkpoints import intact_tag, latest_tag, remove_orphans, save_run_processor, write_marker
from unimask.training.engines import (DeepSpeedEngine, TorchEngine, barrier, deepspeed_config, finite_everywhere,
                                      fused_adamw, init_distributed)
from unimask.training.finetune import (add_lora, export_state, load_bundle_weights, resolve_bundle_init,
                                       trainable_summary)
from unimask.training.resume import apply_learning_rate, check_resume, record_resume
from unimask.training.rng import capture_rng, restore_rng
from unimask.training.step import train_step
from unimask.training.timing import StepTimer
from unimask.training.train_config import TrainConfig, check_model_fits, trained_tasks
from unimask.training.utilization import encoded_rows, mfu, native_bf16, peak_flops, step_flops
from unimask.training.window import LogWindow


class TrainingDiverged(RuntimeError):
    """Training stopped because the loss, the gradients or the parameters stopped being finite."""


def build_model(config: TrainConfig, processor: Processor, seed: int) -> MaskedDiffusionTransformer:
    """The model of a train config, sized to the processor's vocabulary and initialised as `init` says."""
    vocab = processor.vocab
    encoders = {name: {**spec, "id": vocab.range_of(name)[0]} for name, spec in config.model.encoders.items()}
    model_config = replace(config.model, vocab_size=vocab.size, encoders=encoders)
    check_model_fits(config, processor)
    if config.init.causal_lm:
        model = MaskedDiffusionTransformer.from_causal_lm(config.init.causal_lm, vocab.size,
                                                          attention=model_config.attention,
                                                          max_seq_len=model_config.max_seq_len, seed=seed)
        if config.init.lora_rank:
            add_lora(model, config.init.lora_rank, config.init.lora_alpha, config.init.lora_dropout)
        return model
    for name in config.masking.ordinal_sigma:
        if vocab.has(name) and not getattr(processor.tokenizers.get(name), "ordinal", False):
            raise ValueError(f"masking.ordinal_sigma names {name!r}, whose tokenizer's codes are not ordered values "
                             "(bins are; FAST codes are not); drop it from ordinal_sigma.")
    model = MaskedDiffusionTransformer(model_config)
    if config.init.bundle:
        load_bundle_weights(model, config.init.bundle)
    for name in config.init.codebook_embeddings:
        vectors = getattr(processor.tokenizers.get(name), "codebook_vectors", None)
        if vectors is None:
            raise ValueError(f"init.codebook_embeddings names {name!r}, whose tokenizer has no codebook (give a "
                             "modality with a VQ tokenizer, e.g. image).")
        model.init_embedding_rows(vocab.range_of(name)[0], vectors, seed=seed)
    if config.init.lora_rank:
        add_lora(model, config.init.lora_rank, config.init.lora_alpha, config.init.lora_dropout)
    return model


def resolve_attention_kernel(tc: Any, device: torch.device) -> str:
    """`train.attention_kernel`, "auto": flex attention where it is fast (compiled, on CUDA; it has no CPU backward),
    SDPA's math path on a CPU (its backward took 16% less of a bf16 step than the flash kernel's,
    `benchmarks/train_throughput.py --attention`), fused SDPA otherwise."""
    if tc.attention_kernel == "flex" and device.type != "cuda":
        raise ValueError("train.attention_kernel=flex trains on CUDA only (flex attention has no CPU backward); use "
                         "sdpa, math or auto here.")
    if tc.attention_kernel == "auto":
        return "flex" if device.type == "cuda" and tc.compile else "math" if device.type == "cpu" else "sdpa"
    return tc.attention_kernel


def mask_schedules(config: TrainConfig, vocab) -> dict[str, str]:
    """The mask schedule each modality of the vocabulary trains with (recorded in the bundle)."""
    return {name: config.masking.schedule_of(name) for name in ("text", *(n for n, _ in vocab.modalities))}


class Trainer:
    def __init__(self, config: TrainConfig):
        from unimask.training.data.loader import make_loader

        if config.init.bundle:
            config = resolve_bundle_init(config)
        self.config = config
        tc = config.train
        self.rank, self.world, local_rank = init_distributed(bool(tc.deepspeed))
        cuda = torch.cuda.is_available() and tc.device in ("auto", "cuda")
        self.device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and native_bf16(self.device))
        self.out = Path(tc.out)
        self.checkpoints = self.out / "checkpoints"

        self.processor = Processor.from_folders(config.tokenizers, config.sequence, config.model.encoders)
        self.vocab = self.processor.vocab

        torch.manual_seed(tc.seed)
        model = build_model(config, self.processor, tc.seed).to(self.device)
        o = config.optim
        trained = [p for p in model.parameters() if p.requires_grad]  # LoRA leaves the base weights frozen
        decay = [p for p in trained if p.dim() >= 2]
        no_decay = [p for p in trained if p.dim() < 2]
        optimizer = fused_adamw([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], o.lr, tuple(o.betas))
        model.attention_kernel = resolve_attention_kernel(tc, self.device)
        if tc.compile:
            model.compile(mode=None if tc.compile_mode == "default" else tc.compile_mode)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        if tc.deepspeed:
            ds = deepspeed_config(tc.deepspeed, config.data.batch_size, o.grad_accum, o.grad_clip, self.bf16,
                                  self.world)
            if config.init.lora_rank and int(ds.get("zero_optimization", {}).get("stage", 0)) == 1:
                raise ValueError("init.lora_rank with ZeRO-1: DeepSpeed's ZeRO-1 checkpoints leave out frozen "
                                 "weights, so the run could not be exported; use configs/deepspeed/zero2.json or "
                                 "zero3.json, or train without DeepSpeed.")
            self.engine: Any = DeepSpeedEngine(model, optimizer, scheduler, ds)
        else:
            self.engine = TorchEngine(model, optimizer, scheduler, o.grad_clip, o.grad_accum, self.world, self.device)
        # The EMA averages the exported (LoRA-merged) weights: an average of the adapter factors is not one of W.
        self.ema = ({k: v.detach().clone().float() for k, v in export_state(model.state_dict(), config.init).items()}
                    if o.ema > 0 else None)

        self.loader = make_loader(config.data, self.processor, rank=self.rank, world_size=self.world,
                                  pin_memory=self.device.type == "cuda")
        self.masking_generator = torch.Generator(device=self.device).manual_seed(tc.seed * 1000 + self.rank)
        self.step = 0
        self.consumed = 0
        self.nonfinite_steps = 0  # optimizer steps skipped because the loss or gradient norm was not finite
        self.nonfinite_in_a_row = 0
        self.window = LogWindow(list(tasks()), self.device)
        self.peak = tc.peak_flops or peak_flops(self.device, torch.bfloat16 if self.bf16 else torch.float32)
        self.rng_to_restore: dict[str, Any] | None = None
        self._resume()  # before config.yaml is rewritten: a resume is checked against the config the run had
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            for orphan in remove_orphans(self.out):
                print(f"removed {orphan}, a temporary file of an interrupted write")
            if config.init.lora_rank:
                counts = trainable_summary(model)
                print(f"LoRA rank {config.init.lora_rank}: {counts['trainable']:,} of {counts['total']:,} parameters "
                      f"train ({100 * counts['fraction']:.1f}%)")
            save_config(config, self.out / "config.yaml")
            self.vocab.save(self.out)
            save_run_processor(self.processor, self.out)
            atomic_write_text(self.out / "model_config.json", json.dumps(asdict(model.config), indent=2))

    def lr_factor(self, step: int) -> float:
        o = self.config.optim
        if step < o.warmup:
            return (step + 1) / o.warmup
        progress = min(1.0, (step - o.warmup) / max(1, self.config.train.steps - o.warmup))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # ----- state --------------------------------------------------------------------------------------------------
    def _client_state(self) -> dict[str, Any]:
        return {"step": self.step, "consumed": self.consumed, "ema": self.ema}

    def save(self) -> None:
        """Write a checkpoint of the current step (all ranks must call); refuses parameters that are not finite, so a
        diverged run never replaces its last finite checkpoint."""
        local = torch.stack([torch.isfinite(p).all() for p in self.engine.module.parameters()]).all()
        if not finite_everywhere(torch.where(local, 0.0, float("nan"))):
            raise TrainingDiverged(f"the parameters are not finite at step {self.step}, so no checkpoint was written; a "
                                   f"learning rate too high (optim.lr={self.config.optim.lr}) is the usual cause. "
                                   f"{self._last_checkpoint_note()}")
        tag = f"step{self.step:08d}"
        self.engine.save(self.checkpoints, tag, self._client_state())
        # Every rank draws its own random numbers: each saves its generators beside the engine's files.
        atomic_torch_save(self.checkpoints / tag / f"rng_rank{self.rank}.pt", capture_rng(self.masking_generator))
        barrier()
        if self.rank == 0:
            write_marker(self.checkpoints, tag, self.step, self.config.train.keep_last)
        barrier()

    def _resume(self) -> None:
        changes = check_resume(self.out, self.config)
        tag = intact_tag(self.checkpoints)
        if tag is None:
            return
        state = self.engine.load(self.checkpoints, tag)
        apply_learning_rate(self.engine.scheduler, self.config.optim.lr, self.lr_factor)
        self.step, self.consumed = int(state["step"]), int(state["consumed"])
        rng_file = self.checkpoints / tag / f"rng_rank{self.rank}.pt"
        # Restored in `train`, once the data iterator is made (making it draws a seed from torch's generator).
        # Checkpoints written before per-rank files held rank 0's generators in the client state.
        self.rng_to_restore = (torch.load(rng_file, weights_only=True) if rng_file.is_file()
                               else state if "masking_generator" in state else None)
        if self.rng_to_restore is None:
            warnings.warn(f"{self.checkpoints / tag} holds no random generators of rank {self.rank} (the run had "
                          "fewer ranks): this rank continues with fresh ones, so the resume is not bit-exact.",
                          stacklevel=2)
        self.ema = {k: v.to(self.device) for k, v in state["ema"].items()} if state.get("ema") else None
        if self.rank == 0:
            self._forget_metrics_after(self.step)
            print(f"resumed from {self.checkpoints / tag} at step {self.step}")
            record_resume(self.out, self.step, tag, changes)

    def _forget_metrics_after(self, step: int) -> None:
        """metrics.jsonl keeps one line per logged step: lines written after the checkpoint resumed from go."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            atomic_write_text(path, "".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))

    # ----- training -----------------------------------------------------------------------------------------------
    def train_step(self, batch, timer: StepTimer | None = None) -> bool:
        """One micro-batch on the device (an optimizer step at the `grad_accum` boundary), nothing read back;
        returns whether it ended an optimizer step."""
        batch = batch.to(self.device, non_blocking=True)
        if timer is not None:
            timer.mark("data")
        result, boundary = train_step(self.engine, batch, self.vocab, self.config.masking, self.masking_generator,
                                      torch.bfloat16 if self.bf16 else None, timer)
        rows, length = batch.input_ids.shape
        self.window.add_micro_batch(result, rows * length, step_flops(self.engine.module.config, rows, length,
                                                                      encoded_rows(self.processor, batch.tasks)))
        if boundary:
            self.window.add_step(self.engine.last_grad_norm, self.engine.last_skipped)
            if self.ema is not None:
                self._update_ema()
        return boundary

    @torch.no_grad()
    def _update_ema(self) -> None:
        stage3 = getattr(self.engine, "stage", 0) == 3
        state = self.engine.state_dict_for_export() if stage3 else self.engine.module.state_dict()
        current = export_state(state, self.config.init)
        torch._foreach_lerp_(list(self.ema.values()), [current[k].to(self.device, torch.float32) for k in self.ema],
                             1 - self.config.optim.ema)

    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to `train.steps`, or stop (with a checkpoint) after step `stop_after` to resume later."""
        from tqdm.auto import tqdm

        tc = self.config.train
        last_step = min(tc.steps, stop_after) if stop_after else tc.steps
        writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"))
        batches = iter(self.loader)
        for _ in range(self.consumed):  # the data position: the loader is deterministic from the seed
            next(batches)
        if self.rng_to_restore is not None:
            restore_rng(self.rng_to_restore, self.masking_generator)
            self.rng_to_restore = None
        bar = tqdm(total=tc.steps, initial=self.step, desc="train", disable=self.rank != 0, dynamic_ncols=True)
        timer = StepTimer(self.device)
        last: dict[str, float] = {}
        self.engine.module.train()
        while self.step < last_step:
            timer.start()
            batch = next(batches)
            self.consumed += 1
            if not self.train_step(batch, timer):
                continue
            self.step += 1
            checkpoint = self.step % tc.checkpoint_every == 0 or self.step == last_step
            if self.step % tc.log_every == 0 or self.step == tc.steps or checkpoint:
                last = self._log(timer, writer)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.0f}",
                                mfu=f"{last['mfu']:.3f}")
            bar.update(1)
            if checkpoint:
                self.save()
            if tc.sample_every and self.step % tc.sample_every == 0 and self.rank == 0:
                self.write_samples(writer)
        bar.close()
        if writer is not None:
            writer.close()
        skipped = {k: v for k, v in self.loader.dataset.skipped().items() if v}
        if self.rank == 0 and (skipped or self.nonfinite_steps):
            print(f"skipped while training: samples {skipped or 'none'} ('shards': failed shard reads), optimizer steps "
                  f"with a non-finite loss or gradient: {self.nonfinite_steps}")
        return last

    def _log(self, timer: StepTimer, writer: Any) -> dict[str, float]:
        """Read the log window back (the one synchronisation), stop a diverging run, write metrics.jsonl and
        TensorBoard (rank 0); returns the logged metrics."""
        window = self.window.read()
        split = timer.split(window["steps"])
        seconds = split["time/step"] * window["steps"]
        self._check_skips(window)
        tokens_per_s = window["tokens"] * self.world / max(seconds, 1e-9)
        logged = {key: window[key] for key in window if key == "loss" or key.startswith("loss/")}
        logged.update({"lr": self.engine.get_lr(), "grad_norm": window["grad_norm"], "tokens_per_s": tokens_per_s,
                       "mfu": mfu(window["flops"] / max(seconds, 1e-9), self.peak),
                       "skipped/nonfinite_steps": self.nonfinite_steps, **split,
                       **{f"skipped/{k}": v for k, v in self.loader.dataset.skipped().items()}})
        if writer is not None:
            for key, value in logged.items():
                writer.add_scalar(key, value, self.step)
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps({"step": self.step, **logged}) + "\n")
        return logged

    def _check_skips(self, window: dict[str, Any]) -> None:
        """Count the window's skipped optimizer steps (non-finite loss or gradient: the step changed nothing) and stop
        after `train.max_nonfinite_steps` in a row with an error naming the step and the likely cause."""
        self.nonfinite_steps += window["skipped_steps"]
        self.nonfinite_in_a_row = window["skip_run"]
        if window["skipped_steps"] and self.rank == 0:
            print(f"steps {self.step - window['steps'] + 1}-{self.step}: {window['skipped_steps']} optimizer steps "
                  f"skipped, the loss or gradient norm was not finite ({window['skip_run']} in a row now)")
        longest = max(window["longest_skip_run"], window["skip_run"])
        if longest >= self.config.train.max_nonfinite_steps:
            self.nonfinite_in_a_row = longest
            raise TrainingDiverged(
                f"the loss or gradient norm was not finite for {longest} steps in a row, by step {self.step}; "
                f"training stopped. Likely causes: a learning rate too high (optim.lr={self.config.optim.lr}), a "
                f"damaged checkpoint, or data that makes the loss overflow. {self._last_checkpoint_note()}")

    def _last_checkpoint_note(self) -> str:
        tag = latest_tag(self.checkpoints) if self.checkpoints.is_dir() else None
        if tag is None:
            return "No checkpoint was written yet; lower optim.lr and start again."
        return (f"The last checkpoint ({tag}) is finite and untouched; lower optim.lr and start a new run from it, or "
                "re-run the same command to resume it as it was.")

    SAMPLE_PROMPTS = ("the digit seven", "a handwritten three", "a red circle on the left", "two blue squares")

    @torch.no_grad()
    def write_samples(self, writer: Any = None) -> Path | None:
        """Generated images for a few prompts, captioned back by the model: PNG in samples/ and TensorBoard.

        Skipped under ZeRO-3 (parameters are partitioned; samples come from the exported model instead)."""
        from PIL import Image, ImageDraw

        from unimask.pipeline import UnifiedPipeline

        if not self.vocab.has("image") or getattr(self.engine, "stage", 0) == 3:
            return None
        model = self.engine.module
        model.eval()
        pipe = UnifiedPipeline(self.bundle(model), device=self.device)
        images = pipe.text_to_image(list(self.SAMPLE_PROMPTS), steps=12, seed=0)
        captions = pipe.caption(images)
        model.train()
        size = images[0].width * 2
        sheet = Image.new("RGB", (size * len(images), size + 36), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (image, prompt, caption) in enumerate(zip(images, self.SAMPLE_PROMPTS, captions)):
            sheet.paste(image.resize((size, size), Image.NEAREST), (i * size, 0))
            draw.text((i * size + 2, size + 2), prompt[:22], fill="black")
            draw.text((i * size + 2, size + 18), caption[:22], fill="blue")
        path = self.out / "samples" / f"step{self.step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
        if writer is not None:
            writer.add_image("samples", np.asarray(sheet), self.step, dataformats="HWC")
            writer.add_text("samples/captions", " | ".join(captions), self.step)
        return path

    # ----- export -------------------------------------------------------------------------------------------------
    def export(self, directory: str | Path, use_ema: bool = True) -> Path | None:
        """Write the inference bundle (rank 0); ZeRO-3 parameters are gathered first (all ranks must call)."""
        state = self.engine.state_dict_for_export()
        if self.rank != 0:
            return None
        model = MaskedDiffusionTransformer(self.engine.module.config)
        state = export_state(state, self.config.init)
        if use_ema and self.ema is not None:
            state = {k: v.to(state[k].dtype) for k, v in self.ema.items()}
        model.load_state_dict(state)
        return self.bundle(model.eval()).save(directory)

    def bundle(self, model: MaskedDiffusionTransformer) -> Bundle:
        return Bundle(model, self.processor, mask_schedules(self.config, self.vocab),
                      tasks=trained_tasks(self.config))
