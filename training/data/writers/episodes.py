"""Robot episodes -> per-step webdataset samples (shared by the Meta-World and folder writers).

Storage choice: one sample per time step t of an episode of length T, holding

    png          the RGB observation at step t (before action t is applied)
    txt          one instruction paraphrase
    actions.npy  float32 [H, D]: actions t .. t+H-1; past the episode end the last action is repeated
    state.npy    float32 [S]: proprioceptive state at step t (when the episode has one)
    json         source, tasks ["vla"], episode, step, episode_length, valid_steps (= min(H, T - t): the first
                 `valid_steps` rows of actions.npy are real, the rest is padding), instructions (all paraphrases), ...

Per-step samples (instead of per-episode records expanded by the loader) keep every sample independent, so shard
shuffling, shuffle buffers and rank/worker splitting work on samples directly, and a reader needs no episode
context. The cost is that each action appears in up to H samples (8 x 4 floats: negligible next to the PNG).
Repeating the last action (not zeros) as padding keeps padded chunks physically plausible; `valid_steps` lets
the loss or the action tokenizer ignore them.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from ..format import DataError, check_key, content_hash, encode_png, make_sample


def action_chunk(actions: np.ndarray, start: int, horizon: int) -> tuple[np.ndarray, int]:
    """(chunk [horizon, D], valid_steps): actions[start:start+horizon], padded by repeating the last action."""
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or len(actions) == 0:
        raise DataError(f"`actions` must be a non-empty [T, D] array, got shape {actions.shape}.")
    if horizon < 1:
        raise DataError(f"the action chunk length must be >= 1, got {horizon}.")
    if not 0 <= start < len(actions):
        raise DataError(f"step {start} is outside an episode of {len(actions)} steps.")
    chunk = actions[start:start + horizon]
    valid = len(chunk)
    if valid < horizon:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], horizon - valid, axis=0)], axis=0)
    return np.ascontiguousarray(chunk), valid


def check_episode(frames: np.ndarray, actions: np.ndarray, states: np.ndarray | None, where: str) -> None:
    frames, actions = np.asarray(frames), np.asarray(actions)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}.")
    if actions.ndim != 2:
        raise DataError(f"{where}: actions must be [T, D], got shape {tuple(actions.shape)}.")
    if len(frames) != len(actions):
        raise DataError(f"{where}: {len(frames)} images but {len(actions)} actions; they must be per step (same T).")
    if not np.all(np.isfinite(actions)):
        raise DataError(f"{where}: actions contain NaN or inf.")
    if states is not None:
        states = np.asarray(states)
        if states.ndim != 2 or len(states) != len(actions):
            raise DataError(f"{where}: state must be [T, S] with the same T as actions, got {tuple(states.shape)}.")


def episode_samples(prefix: str, episode: int, frames: np.ndarray, actions: np.ndarray, states: np.ndarray | None,
                    instructions: Sequence[str], horizon: int, rng: np.random.Generator, split: str,
                    source: str, extra: dict[str, Any] | None = None,
                    steps: Sequence[int] | None = None,
                    foresight: int = 0) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield (sample, frame content hash) for every step of one episode, or for `steps` only (then `frames` holds
    one frame per listed step). With `foresight` k, each sample also holds `future.png`: the frame k steps ahead
    (the last kept frame at or before it; the episode's last frame near its end), and `json.future_step`."""
    if not instructions:
        raise DataError(f"episode {episode} of {prefix} has no instruction; every robot sample needs one.")
    check_key(prefix)
    length = len(actions)
    steps = range(length) if steps is None else [int(t) for t in steps]
    if len(steps) != len(frames):
        raise DataError(f"episode {episode} of {prefix}: {len(frames)} frames for {len(steps)} sampled steps.")
    for index, (frame, t) in enumerate(zip(frames, steps)):
        chunk, valid = action_chunk(actions, t, horizon)
        meta = {"source": source, "tasks": ["vla"], "split": split, "episode": episode, "step": t,
                "episode_length": length, "valid_steps": valid, "instructions": list(instructions), **(extra or {})}
        ahead = None
        if foresight:
            ahead = max((i for i, step in enumerate(steps) if step <= t + foresight), default=index)
            meta["future_step"] = int(steps[ahead])
        sample = make_sample(f"{prefix}-e{episode:05d}-t{t:04d}", image=frame,
                             text=instructions[int(rng.integers(len(instructions)))], actions=chunk,
                             state=None if states is None else np.asarray(states[t], dtype=np.float32), meta=meta)
        if ahead is not None:
            sample["future.png"] = encode_png(frames[ahead])
        yield sample, content_hash(frame)
