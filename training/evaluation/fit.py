"""The training loop the evaluators share (the digit judge and the small CLIP): AdamW with a one-cycle schedule over
shuffled mini-batches of images, each batch shifted by a random few pixels, the only augmentation."""

from __future__ import annotations

from typing import Callable

import torch


def fit_on_shifted_images(model: torch.nn.Module, images: torch.Tensor,
                          batch_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, epochs: int,
                          batch_size: int, lr: float, weight_decay: float, seed: int, desc: str,
                          progress: bool = True) -> None:
    """Train `model` in place; `batch_loss(shifted_images, index)` returns the loss of the batch `images[index]`."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    total = epochs * -(-len(images) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=0.15)
    shift = max(1, images.shape[-1] // 16)
    model.train()
    bar = tqdm(total=total, desc=desc, disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            dx, dy = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
            loss = batch_loss(torch.roll(images[index], shifts=(dy, dx), dims=(2, 3)), index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
