"""Training the VQ image tokenizer: `unimask train-vq --config configs/vq/<name>.yaml [key=value ...]`.

Loss = L1 + L2 reconstruction + the quantizer's commitment/codebook loss (+ a hinge patch-GAN term after
`gan_start` steps, off by default). Codebook usage is tracked on every batch (perplexity, dead codes); codes unused
for `dead_code_window` steps are re-initialised from random encoder outputs of the current batch, so the codebook
does not collapse onto a few entries. Every `sample_every` steps a PNG grid (originals above reconstructions) is
written; checkpoints (`checkpoint.pt`, written atomically) make a run resumable; the final tokenizer is saved with
`VQImageTokenizer.save_pretrained` to `<out>/tokenizer`.

Images come from dataset folders written by `unimask data ...` (their `train` split; held-out PSNR on `test`) or
from an image folder (png/jpg, recursive; a fixed-seed 5% is held out). All images are loaded into memory once.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from unimask.atomic import atomic_torch_save, atomic_write, atomic_write_text
from unimask.config import load_config, save_config, to_dict


@dataclass
class VQModelConfig:
    resolution: int = 64  # input images are resized to resolution x resolution
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64, 64])  # one level per entry; downsampling 2**(levels-1)
    layers_per_block: int = 1  # resnet layers per level
    latent_channels: int = 16  # width of each code vector
    codebook_size: int = 512  # number of codes
    norm_num_groups: int = 16  # GroupNorm groups (must divide every channel count)
    mid_attention: bool = False  # attention in the encoder/decoder mid block


@dataclass
class VQTrainConfig:
    data: list[str] = field(default_factory=list)  # dataset folders (unimask data ...) or image folders
    max_images: int = 30000  # at most this many training images are loaded (spread over the sources)
    model: VQModelConfig = field(default_factory=VQModelConfig)  # architecture of a new tokenizer
    steps: int = 2000  # optimizer steps
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW peak learning rate (cosine decay to 10%)
    warmup: int = 100  # linear warm-up steps
    l1_weight: float = 1.0  # weight of the L1 reconstruction loss
    l2_weight: float = 1.0  # weight of the L2 reconstruction loss
    quantizer_weight: float = 1.0  # weight of the quantizer's commitment + codebook loss
    dead_code_window: int = 100  # a code unused for this many steps is re-initialised (0 disables)
    gan_start: int = -1  # step at which the patch-GAN loss starts (-1: never)
    gan_weight: float = 0.1  # weight of the generator's GAN loss
    sample_every: int = 500  # steps between reconstruction grids (PNG)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    eval_images: int = 256  # held-out images for PSNR and codebook usage
    seed: int = 0  # initialisation, shuffling and dead-code sampling seed
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"`steps` and `batch_size` must be >= 1, got {self.steps} and {self.batch_size}.")


# ----- data -------------------------------------------------------------------------------------------------------
def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def load_images(sources: list[str], resolution: int, max_images: int, eval_images: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) uint8 arrays [N, R, R, 3] from dataset folders and/or image folders."""
    from PIL import Image

    from unimask.tokenizers.image import to_tensor_batch
    from unimask.training.data.loader import iterate_samples
    from unimask.training.data.format import CARD_FILE

    if not sources:
        raise ValueError("`data` is empty: give dataset folders (unimask data ...) or image folders.")
    per_source = max(1, max_images // len(sources))
    train, held_out = [], []

    def resize(images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, resolution, resolution, 3), np.uint8)
        tensor = to_tensor_batch(images, resolution)
        return (tensor * 255).round().byte().permute(0, 2, 3, 1).numpy()

    for source in sources:
        path = Path(source)
        if (path / CARD_FILE).is_file():
            def take(split: str, limit: int) -> list[np.ndarray]:
                images = []
                for sample in iterate_samples(path, split=split, task="i2t"):
                    images.append(sample["image"])
                    if len(images) >= limit:
                        break
                return images

            train.append(resize(take("train", per_source)))
            held_out.append(resize(take("test", eval_images)))
        elif path.is_dir():
            files = _folder_images(path)
            if not files:
                raise FileNotFoundError(f"{path} holds no png/jpg images.")
            order = np.random.default_rng(seed).permutation(len(files))
            n_test = max(1, len(files) // 20)
            load = lambda idx: [np.asarray(Image.open(files[i]).convert("RGB")) for i in idx]  # noqa: E731
            held_out.append(resize(load(order[:min(n_test, eval_images)])))
            train.append(resize(load(order[n_test:n_test + per_source])))
        else:
            raise FileNotFoundError(f"data source {path} is neither a dataset folder (dataset.json) nor a folder.")
    train_images = np.concatenate(train)
    test_images = np.concatenate(held_out)
    rng = np.random.default_rng(seed)
    test_images = test_images[rng.permutation(len(test_images))[:eval_images]]
    return train_images, test_images


# ----- discriminator ----------------------------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """A small PatchGAN: a map of real/fake logits, one per receptive-field patch."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels * 2, 4, 2, 1), nn.GroupNorm(8, channels * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(channels * 2, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ----- metrics ----------------------------------------------------------------------------------------------------
def psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [0, 1] (per-image PSNR, averaged)."""
    mse = ((reference - reconstruction) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


@torch.no_grad()
def evaluate_tokenizer(tokenizer, images: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Held-out PSNR and codebook usage (fraction of codes used at least once)."""
    from unimask.tokenizers.image import to_tensor_batch

    used = torch.zeros(tokenizer.codebook_size, dtype=torch.bool)
    values = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        codes = tokenizer.encode(chunk)
        used[codes.flatten().cpu()] = True
        reconstruction = tokenizer.decode(codes).cpu()
        values.append(psnr(to_tensor_batch(list(chunk), tokenizer.resolution), reconstruction) * len(chunk))
    return {"psnr": sum(values) / len(images), "codebook_usage": float(used.float().mean()),
            "codes_used": int(used.sum()), "n_images": len(images)}


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> None:
    """PNG with originals in the top row and reconstructions below (images in [0, 1], (B, 3, H, W))."""
    from PIL import Image

    rows = torch.cat([torch.cat(list(originals), dim=2), torch.cat(list(reconstructions), dim=2)], dim=1)
    array = (rows.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


# ----- training ---------------------------------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_vq(config: VQTrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a VQ tokenizer into `out`; returns the final held-out metrics."""
    from tqdm.auto import tqdm

    from unimask.tokenizers.image import VQImageTokenizer, build_vqmodel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    device = _device(config.device)
    torch.manual_seed(config.seed)
    m = config.model
    model = build_vqmodel(m.resolution, m.block_out_channels, m.layers_per_block, m.latent_channels,
                          m.codebook_size, m.norm_num_groups, m.mid_attention).to(device)
    tokenizer = VQImageTokenizer(model, m.resolution)
    train_images, test_images = load_images(config.data, m.resolution, config.max_images, config.eval_images,
                                            config.seed)
    train_tensor = torch.from_numpy(train_images).permute(0, 3, 1, 2)  # (N, 3, R, R) uint8

    discriminator = PatchDiscriminator().to(device) if config.gan_start >= 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.5, 0.9), weight_decay=0.0)
    disc_optimizer = (torch.optim.AdamW(discriminator.parameters(), lr=config.lr, betas=(0.5, 0.9))
                      if discriminator is not None else None)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress_ = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_)))

    generator = torch.Generator().manual_seed(config.seed)
    last_used = torch.zeros(m.codebook_size, dtype=torch.long)
    history: list[dict[str, float]] = []
    step = 0
    checkpoint_path = out / "checkpoint.pt"
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if discriminator is not None and "discriminator" in state:
            discriminator.load_state_dict(state["discriminator"])
            disc_optimizer.load_state_dict(state["disc_optimizer"])
        generator.set_state(state["generator"])
        last_used = state["last_used"]
        step = int(state["step"])
        history = json.loads(state["history"])

    reinitialised = 0
    bar = tqdm(total=config.steps, initial=step, desc="train-vq", disable=not progress)
    model.train()
    while step < config.steps:
        index = torch.randint(0, len(train_tensor), (config.batch_size,), generator=generator)
        x = (train_tensor[index].float() / 127.5 - 1).to(device)  # (B, 3, R, R) in [-1, 1]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        latents = model.encode(x).latents
        quantized, quantizer_loss, (_, _, codes) = model.quantize(latents)
        reconstruction = model.decode(quantized, force_not_quantize=True).sample
        loss = (config.l1_weight * (reconstruction - x).abs().mean() + config.l2_weight * F.mse_loss(reconstruction, x)
                + config.quantizer_weight * quantizer_loss)
        use_gan = discriminator is not None and step >= config.gan_start
        if use_gan:
            loss = loss - config.gan_weight * discriminator(reconstruction).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if use_gan:
            real, fake = discriminator(x), discriminator(reconstruction.detach())
            disc_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            disc_optimizer.step()

        counts = torch.bincount(codes.flatten().cpu(), minlength=m.codebook_size)
        last_used[counts > 0] = step
        probabilities = counts.float() / counts.sum()
        perplexity = float(torch.exp(-(probabilities * torch.log(probabilities.clamp(min=1e-10))).sum()))
        dead = (step - last_used) >= config.dead_code_window if config.dead_code_window > 0 else torch.zeros_like(counts, dtype=torch.bool)
        if config.dead_code_window > 0 and bool(dead.any()):
            # Re-seed dead codes with encoder outputs from this batch, so they sit where the data is.
            flat = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            pick = torch.randint(0, len(flat), (int(dead.sum()),), generator=generator)
            with torch.no_grad():
                model.quantize.embedding.weight[dead.nonzero().flatten().to(device)] = flat[pick.to(device)]
            last_used[dead] = step
            reinitialised += int(dead.sum())
        step += 1
        record = {"step": step, "loss": loss.item(), "perplexity": perplexity, "dead_codes": int(dead.sum()),
                  "lr": lr_at(step - 1)}
        history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ppl=f"{perplexity:.0f}", dead=record["dead_codes"])

        if step % config.sample_every == 0 or step == config.steps:
            model.eval()
            with torch.no_grad():
                sample = test_images[:8] if len(test_images) else train_images[:8]
                from unimask.tokenizers.image import to_tensor_batch

                save_grid(to_tensor_batch(list(sample), m.resolution), tokenizer.reconstruct(sample).cpu(),
                          out / "samples" / f"recon_{step:07d}.png")
            model.train()
        if step % config.checkpoint_every == 0 or step == config.steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "generator": generator.get_state(), "last_used": last_used, "history": json.dumps(history)}
            if discriminator is not None:
                state["discriminator"] = discriminator.state_dict()
                state["disc_optimizer"] = disc_optimizer.state_dict()
            atomic_torch_save(checkpoint_path, state)
    bar.close()
    model.eval()
    metrics = evaluate_tokenizer(tokenizer, test_images) if len(test_images) else {}
    metrics.update({"steps": step, "train_images": int(len(train_images)), "dead_codes_reinitialised": reinitialised,
                    "final_loss": history[-1]["loss"] if history else None,
                    "first_loss": history[0]["loss"] if history else None})
    tokenizer.save_pretrained(out / "tokenizer")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


# ----- command line -----------------------------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train-vq", help="train the VQ image tokenizer")
    parser.add_argument("--config", required=True, help="YAML config (configs/vq/tiny-cpu.yaml, configs/vq/gpu.yaml)")
    parser.add_argument("--out", required=True, help="run folder (resumes if it holds a checkpoint)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. steps=500 model.codebook_size=256")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config, VQTrainConfig, args.overrides)
    start = time.time()
    metrics = train_vq(config, args.out)
    print(json.dumps({**metrics, "seconds": round(time.time() - start, 1), "config": to_dict(config)}, indent=2))
    print(f"tokenizer saved to {Path(args.out) / 'tokenizer'}")
    return 0
