"""The behaviour-cloning baseline learns: on a toy task whose action chunk depends on where a dot is in the frame, on
the state and on the task, it must reach a small error on held-out observations and act in real units after a
save/load round trip."""

from __future__ import annotations

import numpy as np
import torch

from unimask.training.bc import BCPolicy, Demonstrations, train_bc


def toy_demonstrations(count: int, seed: int) -> tuple[Demonstrations, np.ndarray]:
    """Frames with one bright dot; the chunk moves towards the dot (x, y from its column and row), the task flips
    the sign of the third dimension and the state offsets the fourth. Actions in real units spanning [-3, 5]."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((count, 3, 32, 32), dtype=np.uint8)
    rows, cols = rng.integers(2, 30, count), rng.integers(2, 30, count)
    for i, (r, c) in enumerate(zip(rows, cols)):
        frames[i, :, r - 2:r + 2, c - 2:c + 2] = 255
    tasks = rng.integers(0, 2, count)
    states = rng.uniform(-1, 1, (count, 2)).astype(np.float32)
    target = np.stack([cols / 31 * 8 - 3, rows / 31 * 8 - 3, np.where(tasks == 1, 4.0, -2.0), states[:, 0] * 3 + 1],
                      axis=1).astype(np.float32)
    chunks = np.repeat(target[:, None], 4, axis=1)
    demos = Demonstrations(torch.as_tensor(frames), torch.as_tensor(states), torch.as_tensor(chunks),
                           torch.as_tensor(tasks), ["left", "right"])
    return demos, chunks


def test_bc_learns_a_toy_task_and_acts_in_real_units(tmp_path):
    train, _ = toy_demonstrations(2000, seed=0)
    result = train_bc(train, tmp_path / "policy", steps=400, batch_size=64, lr=2e-3, threads=1, log_every=0,
                      channels=[16, 32, 32], hidden=128, shift=0)
    assert result["steps"] == 400 and result["final_l1"] < 0.15, result
    policy = BCPolicy.from_pretrained(tmp_path / "policy")
    held_out, chunks = toy_demonstrations(200, seed=1)
    errors = [np.abs(policy.act(frame.permute(1, 2, 0).numpy(), state.numpy(), ["left", "right"][int(task)]) - chunk)
              for frame, state, task, chunk in zip(held_out.frames, held_out.states, held_out.tasks, chunks)]
    # Real units span 8 on each dimension: a mean error of 0.5 is about 6% of the range (an untrained policy: ~25%).
    assert np.mean(errors) < 0.5, np.mean(errors)
