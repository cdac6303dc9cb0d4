"""What the trainer logs, accumulated on the device between log steps and read back once per log window.

Every step adds its loss, per-task losses, gradient norm and whether its optimizer step was skipped (a non-finite
loss or gradient) to device tensors; nothing is read back until `read()`, so the training thread never waits for the
device in between. The count of consecutive skipped steps is kept on the device too (`run = (run + 1) * skipped`),
so a diverging run is still caught: `read()` reports the longest run of the window and the run that is still going.
"""

from __future__ import annotations

from typing import Any

import torch

from unimask.masking import DiffusionLoss


class LogWindow:
    def __init__(self, task_names: list[str], device: torch.device):
        self.task_names = task_names
        self.device = device
        self.skip_run = torch.zeros((), device=device)  # consecutive skipped steps up to the last one (carries over)
        self.reset()

    def reset(self) -> None:
        zeros = torch.zeros(5, device=self.device)
        # loss sum, micro-batches, grad-norm sum, skipped steps, longest run of skipped steps in this window
        self.totals = zeros
        self.task_loss = torch.zeros(len(self.task_names), device=self.device)
        self.task_targets = torch.zeros(len(self.task_names), device=self.device)
        self.steps = 0
        self.tokens = 0
        self.flops = 0.0

    def add_micro_batch(self, result: DiffusionLoss, tokens: int, flops: float) -> None:
        loss = result.loss.detach().float()
        self.totals = self.totals + torch.stack([loss, torch.ones_like(loss), *torch.zeros(3, device=self.device)])
        self.task_loss = self.task_loss + result.task_loss
        self.task_targets = self.task_targets + result.task_targets
        self.tokens += tokens
        self.flops += flops

    def add_step(self, grad_norm: Any, skipped: Any) -> None:
        """An optimizer step (taken or skipped); both arguments may be device tensors or host numbers."""
        skipped = torch.as_tensor(skipped, dtype=torch.float32).to(self.device, non_blocking=True)
        grad_norm = torch.as_tensor(grad_norm, dtype=torch.float32).to(self.device, non_blocking=True)
        self.skip_run = (self.skip_run + 1) * skipped
        zero = torch.zeros((), device=self.device)
        self.totals = self.totals + torch.stack([zero, zero, torch.nan_to_num(grad_norm) * (1 - skipped), skipped,
                                                 zero])
        self.totals[4] = torch.maximum(self.totals[4], self.skip_run)
        self.steps += 1

    def read(self) -> dict[str, Any]:
        """The window's means as host numbers (the one synchronisation), then a new window starts."""
        loss, micro, grad_norm, skipped, longest = self.totals.tolist()
        run = float(self.skip_run)
        per_task = {name: value / count for name, value, count in
                    zip(self.task_names, self.task_loss.tolist(), self.task_targets.tolist()) if count}
        taken = self.steps - skipped
        out = {"loss": loss / max(micro, 1), **{f"loss/{k}": v for k, v in per_task.items()},
               "grad_norm": grad_norm / taken if taken else float("nan"), "skipped_steps": int(skipped),
               "longest_skip_run": int(longest), "skip_run": int(run), "steps": self.steps, "tokens": self.tokens,
               "flops": self.flops}
        self.reset()
        return out
