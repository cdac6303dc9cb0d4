"""Cutting episodes [T, D] into fixed-horizon action chunks with a validity mask for the padded steps."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .common import PAD_MODES, ActionTokenizerError, as_float_array


def chunk_episode(actions: Any, horizon: int, stride: int = 1, pad: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """Cut an episode `[T, D]` into chunks `[N, horizon, D]` and a validity mask `[N, horizon]`.

    A chunk starts at every `stride`-th step. Near the end of the episode the chunk runs past the last action and is
    padded: `pad="last"` repeats the final action (the robot holds its last command; right for absolute targets),
    `pad="zeros"` writes zeros (right for delta/velocity actions, where zero means "stay"), `pad="none"` keeps only
    chunks that fit entirely inside the episode. `valid[n, h]` is False exactly on the padded steps.
    """
    x = as_float_array(actions, "actions")
    if x.ndim != 2:
        raise ActionTokenizerError(f"an episode must have shape [T, D], got {x.shape}.")
    if not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ActionTokenizerError(f"`horizon` must be an integer >= 1, got {horizon!r}.")
    if not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ActionTokenizerError(f"`stride` must be an integer >= 1, got {stride!r}.")
    if pad not in PAD_MODES:
        raise ActionTokenizerError(f"`pad` must be one of {PAD_MODES}, got {pad!r}.")
    steps, dim = x.shape
    if steps == 0:
        raise ActionTokenizerError("the episode has no steps (T = 0).")
    last_start = steps - horizon if pad == "none" else steps - 1
    starts = np.arange(0, last_start + 1, stride)
    idx = starts[:, None] + np.arange(horizon)[None, :]  # [N, H]
    valid = idx < steps
    chunks = x[np.minimum(idx, steps - 1)]  # "last" padding by index clamping
    if pad == "zeros":
        chunks = np.where(valid[..., None], chunks, 0.0)
    return chunks.reshape(len(starts), horizon, dim), valid


def chunk_episodes(episodes: Iterable[Any], horizon: int, stride: int = 1,
                   pad: str = "last") -> tuple[np.ndarray, np.ndarray]:
    """`chunk_episode` over many episodes, concatenated: `([N, horizon, D], [N, horizon])`."""
    chunks, valids = [], []
    for i, episode in enumerate(episodes):
        c, v = chunk_episode(episode, horizon, stride, pad)
        if chunks and c.shape[-1] != chunks[0].shape[-1]:
            raise ActionTokenizerError(f"episode {i} has {c.shape[-1]} action dimensions, the first one has "
                                       f"{chunks[0].shape[-1]}; all episodes must share D.")
        chunks.append(c)
        valids.append(v)
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise ActionTokenizerError(f"no chunks: the episodes are empty or shorter than horizon={horizon} "
                                   f"with pad='none'.")
    return np.concatenate(chunks), np.concatenate(valids)
