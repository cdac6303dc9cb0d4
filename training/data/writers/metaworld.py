"""The `metaworld` dataset: Meta-World MT10 demonstrations from the shipped scripted experts, rendered offline.

Per episode: the task's environment is seeded and reset (`unimask.training.envs.metaworld`) and stepped with the
task's expert until `info["success"]` or `max_steps` (200). Only successful episodes are kept; failures are counted
per task in the card and replaced by the next seed. Expert actions are clipped to [-1, 1] and cast to float32
*before* they are applied, so the stored actions replay the episode exactly (`replay_episode`).

Samples are per step (see `episodes`): the RGB frame before action t, one instruction paraphrase, `actions.npy`
[H, 4] (the next H actions, H = 8 by default, last action repeated past the end, `json.valid_steps`), `state.npy`
[4] = the first 4 observation entries (end-effector xyz + gripper opening; not object or goal positions), and
`json` (task, seed, episode, step, ...).

Episodes are produced by worker processes (spawned, each with its own renderer); the parent writes the shards.
Seeds are deterministic: episode candidates of task k in split s use seeds `seed * 10**6 + k * 10**4 + offset + i`
with offset 0 for train and 5000 for test, so train and test never share an initial state; the card lists them.
Train samples go through a seeded shuffle buffer before being written, so every shard mixes tasks and episodes.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from unimask.training.envs.metaworld import (ACTION_DIM, CAMERAS, INSTRUCTIONS, MT10_TASKS, NAMED_CAMERAS, STATE_DIM,
                                             FrameRenderer, ensure_gl, make_env, make_policy, record_episode)

from ..format import DataError, DatasetWriter
from .episodes import episode_samples

TEST_SEED_OFFSET = 5000


def episode_seed(seed: int, task_index: int, split: str, i: int) -> int:
    if i >= TEST_SEED_OFFSET:
        raise DataError(f"at most {TEST_SEED_OFFSET} episode candidates per task and split, got index {i}.")
    return seed * 10**6 + task_index * 10**4 + (TEST_SEED_OFFSET if split == "test" else 0) + i

# ----- worker side ------------------------------------------------------------------------------------------------
_WORKER_CACHE: dict[tuple[str, int, str], tuple[Any, Any, FrameRenderer]] = {}


@dataclass
class _Job:
    task: str
    task_index: int
    split: str
    seeds: list[int]
    first_index: int  # index (within this task and split) of the first candidate; gives stable episode ids
    image_size: int
    camera: str
    max_steps: int
    horizon: int
    sample_seed: int
    frame_stride: int = 1
    foresight: int = 0


@dataclass
class _JobResult:
    task: str
    split: str
    episodes: list[dict[str, Any]] = field(default_factory=list)  # successful: {"seed", "index", "steps", "samples"}
    rejected: list[int] = field(default_factory=list)  # seeds whose expert episode failed
    seconds: float = 0.0


def _close_worker_cache() -> None:
    # Free GL contexts while the GL library is still loaded (at interpreter exit EGL teardown fails noisily).
    for _, _, renderer in _WORKER_CACHE.values():
        renderer.close()
    _WORKER_CACHE.clear()


def _run_job(job: _Job) -> _JobResult:
    started = time.time()
    key = (job.task, job.image_size, job.camera)
    if key not in _WORKER_CACHE:
        # One environment + renderer per process (a renderer holds ~125 MB of GL state and takes ~0.6 s to make);
        # jobs of several episodes amortise the switch.
        _close_worker_cache()
        env = make_env(job.task)
        _WORKER_CACHE[key] = (env, make_policy(job.task), FrameRenderer(env, job.image_size, job.camera))
        # A pool worker ends with a normal interpreter exit: free the renderer at exit, before mujoco's own exit
        # handler (registered with the first GL context) terminates the EGL display. Exit handlers run last-in first.
        atexit.unregister(_close_worker_cache)
        atexit.register(_close_worker_cache)
    env, policy, renderer = _WORKER_CACHE[key]
    result = _JobResult(job.task, job.split)
    instructions = list(INSTRUCTIONS[job.task])
    for offset, seed in enumerate(job.seeds):
        rng = np.random.default_rng([job.sample_seed, seed])
        episode = record_episode(job.task, env, policy, renderer, seed, job.max_steps, job.frame_stride,
                                 int(rng.integers(job.frame_stride)))
        if not episode.success:
            result.rejected.append(seed)
            continue
        index = job.first_index + offset
        samples = list(episode_samples(f"mw-{job.split}-{job.task}", index, episode.frames, episode.actions,
                                       episode.states, instructions, job.horizon, rng, job.split, "metaworld",
                                       {"task_name": job.task, "seed": seed}, episode.frame_steps, job.foresight))
        result.episodes.append({"seed": seed, "index": index, "steps": len(episode.actions), "samples": samples})
    result.seconds = time.time() - started
    return result


# ----- parent side ------------------------------------------------------------------------------------------------
class _ShuffleBuffer:
    """Seeded reservoir between producers and the shard writer, so shards mix tasks and episodes."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.items: list[Any] = []
        self.rng = np.random.default_rng(seed)

    def push(self, item: Any) -> Any | None:
        self.items.append(item)
        if len(self.items) <= self.size:
            return None
        i = int(self.rng.integers(len(self.items)))
        self.items[i], self.items[-1] = self.items[-1], self.items[i]
        return self.items.pop()

    def drain(self) -> Iterable[Any]:
        order = self.rng.permutation(len(self.items))
        items, self.items = self.items, []
        return (items[i] for i in order)


def write_metaworld(out: str | Path, *, tasks: Sequence[str] = MT10_TASKS, train_episodes: int = 100,
                    test_episodes: int = 10, image_size: int = 64, camera: str = "front", horizon: int = 8,
                    max_steps: int = 200, frame_stride: int = 1, foresight: int = 0, workers: int = 0,
                    episodes_per_job: int = 10, seed: int = 0,
                    shard_size: int = 2000, shuffle_buffer: int = 4000, progress: bool = True,
                    command: str | None = None) -> dict[str, Any]:
    """Render expert demonstrations of `tasks` into `out`; `*_episodes` are successful episodes per task.

    `workers=0` uses one process per CPU core; `workers=1` runs in this process (no subprocess). `frame_stride` s
    keeps one step in s of each episode (from a random phase per episode) as a sample: rendering is ~90% of an
    episode's time, so for the same rendering time the data holds about s times as many episodes (initial states,
    goal positions), whose diversity is what a policy generalises from; adjacent frames add little. `foresight` k
    adds to each sample the frame k steps ahead (`future.png`, a foresight target; see `episode_samples`).
    """
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in MT10_TASKS]
    if unknown or not tasks:
        raise DataError(f"`tasks` must be a non-empty subset of MT10 {list(MT10_TASKS)}, got {tasks}.")
    if camera not in CAMERAS and camera not in NAMED_CAMERAS:
        raise DataError(f"unknown camera {camera!r}; choose from {sorted(CAMERAS)} or {list(NAMED_CAMERAS)}.")
    for name, value, low in (("train_episodes", train_episodes, 0), ("test_episodes", test_episodes, 0),
                             ("horizon", horizon, 1), ("max_steps", max_steps, 1), ("frame_stride", frame_stride, 1),
                             ("foresight", foresight, 0), ("episodes_per_job", episodes_per_job, 1)):
        if value < low:
            raise DataError(f"`{name}` must be >= {low}, got {value}.")
    if train_episodes + test_episodes == 0:
        raise DataError("`train_episodes` and `test_episodes` are both 0; nothing to write.")
    workers = workers or (os.cpu_count() or 1)
    ensure_gl()

    stats: dict[str, Any] = {
        "episodes": {s: {t: 0 for t in tasks} for s in ("train", "test")},
        "rejected": {s: {t: 0 for t in tasks} for s in ("train", "test")},
        "rejected_seeds": [],
        "steps": {s: {t: 0 for t in tasks} for s in ("train", "test")},
        "train_steps_dropped_duplicate": 0,
        "worker_seconds": 0.0,
    }
    seeds_used: dict[str, dict[str, list[int]]] = {s: {t: [] for t in tasks} for s in ("train", "test")}
    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(workers)
    bar = None
    if progress:
        from tqdm import tqdm

        total = len(tasks) * (train_episodes + test_episodes)
        bar = tqdm(total=total, desc="metaworld episodes", unit="ep")
    try:
        with DatasetWriter(out, "metaworld", maxcount=shard_size) as writer:
            for split, wanted in (("test", test_episodes), ("train", train_episodes)):
                buffer = _ShuffleBuffer(shuffle_buffer if split == "train" else 0, seed)
                next_index = {t: 0 for t in tasks}
                need = {t: wanted for t in tasks}
                while any(need.values()):
                    # Round-robin across tasks so consecutive results (and shards) mix tasks.
                    jobs = []
                    queues = {t: _split_jobs(need[t], episodes_per_job) for t in tasks}
                    while any(queues.values()):
                        for task in tasks:
                            if not queues[task]:
                                continue
                            count, first, k = queues[task].pop(0), next_index[task], MT10_TASKS.index(task)
                            jobs.append(_Job(task, k, split, [episode_seed(seed, k, split, first + i)
                                                              for i in range(count)],
                                             first, image_size, camera, max_steps, horizon, seed, frame_stride,
                                             foresight))
                            next_index[task] += count
                    results = pool.imap(_run_job, jobs) if pool else map(_run_job, jobs)
                    for result in results:
                        stats["worker_seconds"] += result.seconds
                        stats["rejected"][split][result.task] += len(result.rejected)
                        stats["rejected_seeds"] += [[result.task, s] for s in result.rejected]
                        for ep in result.episodes:
                            if need[result.task] == 0:
                                continue  # a retry round produced more than needed; keep the first in seed order
                            need[result.task] -= 1
                            stats["episodes"][split][result.task] += 1
                            stats["steps"][split][result.task] += ep["steps"]
                            seeds_used[split][result.task].append(ep["seed"])
                            if bar is not None:
                                bar.update(1)
                            for sample, digest in ep["samples"]:
                                if split == "train" and digest in writer.hashes["test"]:
                                    stats["train_steps_dropped_duplicate"] += 1
                                    continue
                                out_item = buffer.push((sample, digest))
                                if out_item is not None:
                                    writer.write(split, out_item[0], image_hash=out_item[1])
                    if any(n > 0 and next_index[t] >= 3 * wanted + 10 for t, n in need.items()):
                        bad = [t for t, n in need.items() if n > 0]
                        raise DataError(f"the expert keeps failing on {bad}; stopped after {next_index} candidates.")
                for sample, digest in buffer.drain():
                    writer.write(split, sample, image_hash=digest)
            stats["worker_seconds"] = round(stats["worker_seconds"], 2)
            mean_steps = {t: round(stats["steps"]["train"][t] / max(1, stats["episodes"]["train"][t]), 1)
                          for t in tasks}
            return writer.finish({
                "source": "metaworld",
                "description": "Meta-World MT10 scripted-expert demonstrations (metaworld.policies), successful only",
                "seed": seed,
                "image_size": [image_size, image_size],
                "tasks": ["vla"],
                "task_names": tasks,
                "instructions": {t: list(INSTRUCTIONS[t]) for t in tasks},
                "camera": {"name": camera, **CAMERAS.get(camera, {})},
                "horizon": horizon,
                "max_steps": max_steps,
                "frame_stride": frame_stride,
                "foresight": foresight,
                "action_dim": ACTION_DIM,
                "action_meaning": "end-effector dx, dy, dz (scaled by Meta-World's action_scale) and gripper effort, "
                                  "each in [-1, 1]",
                "state_dim": STATE_DIM,
                "state_meaning": "observation[0:4]: end-effector x, y, z (metres) and gripper opening",
                "episode_seeds": seeds_used,
                "seed_rule": "seed * 10**6 + mt10_task_index * 10**4 + (5000 if test else 0) + candidate index",
                "mean_steps": mean_steps,
                "stats": stats,
                "command": command,
            })
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.close()
            pool.join()
        else:
            _close_worker_cache()


def _split_jobs(count: int, per_job: int) -> list[int]:
    return [min(per_job, count - i) for i in range(0, count, per_job)]
