"""A plain behaviour-cloning policy: the baseline every unimask robot figure stands beside.

A convolutional encoder reads the raw frame, the end-effector state and a one-hot of the task enter beside it, and an
MLP regresses the whole action chunk (L1, in actions normalised to [-1, 1]), with random-shift augmentation. It is
trained on the same MT10 shards as the unified model (the same demonstrations, frames and state), for a stated
budget of optimizer steps or wall-clock minutes, and evaluated by the same closed-loop code on the same seeds
(`unimask.training.evaluation.robot.evaluate_policy`):

    policy = train_bc("runs/q/data/mt10", "runs/bc", minutes=5)       # BCPolicy folder: config.json + safetensors
    evaluate_policy(BCPolicyFactory("runs/bc"), episodes=10, workers=2)

The folder holds `config.json` (architecture, task order, action and state statistics) and `model.safetensors`, so a
saved policy acts in real units without its training data, as LeRobot's policies do.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from unimask.training.weights import load_weights, save_weights
from unimask.encoders import random_shift

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class BCConfig:
    tasks: list[str]  # task names, in the order of the one-hot input
    image_size: int = 64  # side of the square frames
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # stride-2 convolutions
    hidden: int = 256  # width of the visual feature and the MLP
    horizon: int = 8  # actions per predicted chunk
    action_dim: int = 4
    state_dim: int = 4
    shift: int = 4  # random-shift augmentation in pixels (training only)
    action_low: list[float] = field(default_factory=list)  # per dimension: the value mapped to -1
    action_high: list[float] = field(default_factory=list)  # ... and to +1
    state_low: list[float] = field(default_factory=list)
    state_high: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("`tasks` must name at least one task (the one-hot input).")
        if self.image_size // 2 ** len(self.channels) < 1:
            raise ValueError(f"{len(self.channels)} stride-2 convolutions leave nothing of {self.image_size} px.")


def _normalise(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return 2 * (x - low) / (high - low).clamp(min=1e-6) - 1


class BCPolicy(nn.Module):
    """frame uint8 (B, 3, S, S), state (B, state_dim), task index (B,) -> normalised chunk (B, horizon, action_dim)."""

    def __init__(self, config: BCConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 3
        for i, channels in enumerate(config.channels):
            layers += [nn.Conv2d(width, channels, 4 if i == 0 else 3, stride=2, padding=1),
                       nn.GroupNorm(8 if channels % 8 == 0 else 1, channels), nn.SiLU()]
            width = channels
        self.encoder = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.visual = nn.Linear(width * side * side, config.hidden)
        inputs = config.hidden + config.state_dim + len(config.tasks)
        self.head = nn.Sequential(nn.Linear(inputs, config.hidden), nn.SiLU(), nn.Linear(config.hidden, config.hidden),
                                  nn.SiLU(), nn.Linear(config.hidden, config.horizon * config.action_dim))
        for name in ("action_low", "action_high", "state_low", "state_high"):
            values = getattr(config, name) or [0.0 if name.endswith("low") else 1.0] * (
                config.action_dim if name.startswith("action") else config.state_dim)
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, frames: torch.Tensor, state: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 127.5 - 1
        if self.training and self.config.shift:
            x = random_shift(x, self.config.shift)
        visual = F.silu(self.visual(self.encoder(x).flatten(1)))
        onehot = F.one_hot(task, len(self.config.tasks)).float()
        state = _normalise(state.float(), self.state_low, self.state_high)
        out = self.head(torch.cat([visual, state, onehot], dim=1))
        return out.view(-1, self.config.horizon, self.config.action_dim)

    def to_real(self, normalised: torch.Tensor) -> torch.Tensor:
        return (normalised + 1) * 0.5 * (self.action_high - self.action_low) + self.action_low

    @torch.no_grad()
    def act(self, frame: np.ndarray, state: np.ndarray, task: str) -> np.ndarray:
        """One observation (HWC uint8 frame, state [S]) -> action chunk [horizon, action_dim] in real units."""
        self.eval()
        frames = torch.as_tensor(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
        index = torch.tensor([self.config.tasks.index(task)])
        chunk = self.to_real(self(frames, torch.as_tensor(state, dtype=torch.float32)[None], index))
        return chunk[0].numpy()

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_weights(directory, self, self.config, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BCPolicy":
        config, state = load_weights(directory, WEIGHTS_FILE, CONFIG_FILE, "train a policy there with train_bc first")
        policy = cls(BCConfig(**config))
        policy.load_state_dict(state)
        return policy.eval()


@dataclass
class Demonstrations:
    """Every training sample of an MT10 dataset in memory: frames (N, 3, S, S) uint8, states (N, S), chunks
    (N, H, D), task indices (N,)."""

    frames: torch.Tensor
    states: torch.Tensor
    chunks: torch.Tensor
    tasks: torch.Tensor
    task_names: list[str]


def load_demonstrations(dataset: str | Path, split: str = "train") -> Demonstrations:
    from unimask.training.data.format import read_card
    from unimask.training.data.loader import iterate_samples

    names = list(read_card(dataset)["task_names"])
    frames, states, chunks, tasks = [], [], [], []
    for sample in iterate_samples(dataset, split=split, task="vla"):
        frames.append(sample["image"])
        states.append(sample["state"])
        chunks.append(sample["action"])
        tasks.append(names.index(sample["meta"]["task_name"]))
    if not frames:
        raise ValueError(f"{dataset} has no {split} samples to clone.")
    return Demonstrations(torch.as_tensor(np.stack(frames)).permute(0, 3, 1, 2).contiguous(),
                          torch.as_tensor(np.stack(states)), torch.as_tensor(np.stack(chunks)),
                          torch.as_tensor(tasks), names)


def _statistics(demos: Demonstrations) -> dict[str, list[float]]:
    """Action bounds as the action tokenizer fits them (q01/q99; the gripper, already in [-1, 1], kept as it is) and
    state min/max."""
    actions = demos.chunks.reshape(-1, demos.chunks.shape[-1]).numpy()
    low, high = np.quantile(actions, [0.01, 0.99], axis=0)
    low[-1], high[-1] = -1.0, 1.0
    states = demos.states.numpy()
    return {"action_low": low.tolist(), "action_high": high.tolist(),
            "state_low": states.min(0).tolist(), "state_high": states.max(0).tolist()}


def train_bc(dataset: str | Path | Demonstrations, out: str | Path, *, steps: int | None = None,
             minutes: float | None = None,
             batch_size: int = 64, lr: float = 1e-3, seed: int = 0, threads: int | None = None,
             log_every: int = 200, **config: Any) -> dict[str, Any]:
    """Train a `BCPolicy` on a dataset's train split (or demonstrations already in memory) until `steps` optimizer
    steps or `minutes` of training (the first reached; the loading of the data is not counted), save it to `out`;
    returns what was trained and its time. `threads` torch threads (default: every core this process may use)."""
    if steps is None and minutes is None:
        raise ValueError("give a budget: `steps`, `minutes` or both.")
    if (steps is not None and steps < 1) or (minutes is not None and not minutes > 0):
        raise ValueError(f"`steps` must be >= 1 and `minutes` > 0, got {steps} and {minutes}.")
    torch.manual_seed(seed)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    load_start = time.perf_counter()
    demos = dataset if isinstance(dataset, Demonstrations) else load_demonstrations(dataset)
    load_seconds = time.perf_counter() - load_start
    policy = BCPolicy(BCConfig(tasks=demos.task_names, image_size=demos.frames.shape[-1],
                               horizon=demos.chunks.shape[1], action_dim=demos.chunks.shape[2],
                               state_dim=demos.states.shape[1], **_statistics(demos), **config))
    targets = _normalise(demos.chunks, policy.action_low, policy.action_high).clamp(-1, 1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-4)
    total = steps or 10**9
    generator = torch.Generator().manual_seed(seed)
    policy.train()
    start, step, losses = time.perf_counter(), 0, []
    while step < total and (minutes is None or time.perf_counter() - start < 60 * minutes):
        # Cosine decay over the step budget, or over the time budget when that is the one given.
        progress = step / total if steps else (time.perf_counter() - start) / (60 * minutes)
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        index = torch.randint(len(targets), (batch_size,), generator=generator)
        predicted = policy(demos.frames[index], demos.states[index], demos.tasks[index])
        loss = F.l1_loss(predicted, targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"bc step {step}: L1 {np.mean(losses[-log_every:]):.4f} ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    policy.save_pretrained(out)
    return {"steps": step, "train_seconds": seconds, "load_seconds": load_seconds, "samples": len(targets),
            "sample_gradients": step * batch_size, "final_l1": float(np.mean(losses[-50:])),
            "parameters": sum(p.numel() for p in policy.parameters()), "batch_size": batch_size, "lr": lr}


class BCPolicyFactory:
    """`make_policy_for(task)` for `evaluate_policy`: picklable (it holds the folder), so rollouts can run in worker
    processes, each loading the policy once on one thread."""

    def __init__(self, directory: str | Path):
        self.directory = str(directory)
        self._policy: BCPolicy | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "_policy": None}

    def __call__(self, task: str):
        from unimask.training.envs.gym import IMAGE_KEY, STATE_KEY

        if self._policy is None:
            torch.set_num_threads(1)
            self._policy = BCPolicy.from_pretrained(self.directory)
        policy = self._policy

        def act(obs: dict[str, Any], executed: Sequence[Any] | None = None) -> np.ndarray:
            return policy.act(obs[IMAGE_KEY], obs[STATE_KEY], task)

        return act
