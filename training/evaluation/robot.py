"""Closed-loop evaluation on Meta-World MT10 through a gymnasium-style environment.

`MetaWorldEnv` renders the same camera and frame size as the `metaworld` dataset writer and exposes what a policy
may see: the RGB frame, the proprioceptive state (end-effector xyz + gripper, `obs[:4]`) and the instruction.
`evaluate_policy` runs receding-horizon rollouts: the policy returns an action chunk, the first `execute_steps`
actions are executed, then it re-plans, until success or the step cap.

Evaluation seeds default to `EVAL_SEED_BASE + task_index * 10**4 + i`, a range the dataset writer never uses for a
data seed below 100 (its seeds are `seed * 10**6 + task_index * 10**4 + i`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from unimask.training.envs.metaworld import MT10_TASKS, MetaWorldEnv

EVAL_SEED_BASE = 10**8
Policy = Callable[[dict[str, Any]], np.ndarray]


def eval_seeds(task: str, episodes: int, base: int = EVAL_SEED_BASE) -> list[int]:
    """Default evaluation seeds of a task (disjoint from the dataset writer's)."""
    return [base + MT10_TASKS.index(task) * 10**4 + i for i in range(episodes)]


@dataclass
class Rollout:
    task: str
    seed: int
    success: bool
    steps: int  # actions executed
    chunk_latency_s: list[float] = field(default_factory=list)  # policy wall time per chunk
    frames: list[np.ndarray] = field(default_factory=list)  # when recorded


def rollout(policy: Policy, env: MetaWorldEnv, seed: int, execute_steps: int | None = None,
            record_frames: bool = False) -> Rollout:
    """One receding-horizon episode: ask `policy(observation)` for a chunk [H, 4], execute up to `execute_steps` of
    it (all by default), re-plan."""
    obs, _ = env.reset(seed=seed)
    result = Rollout(env.task, seed, False, 0)
    if record_frames:
        result.frames.append(obs["image"])
    while True:
        start = time.perf_counter()
        chunk = np.asarray(policy(obs), dtype=np.float32)
        result.chunk_latency_s.append(time.perf_counter() - start)
        if chunk.ndim != 2 or chunk.shape[1] != 4 or len(chunk) == 0:
            raise ValueError(f"the policy must return an action chunk of shape [H, 4], got {chunk.shape}.")
        for action in chunk[: execute_steps or len(chunk)]:
            obs, _, terminated, truncated, _ = env.step(action)
            result.steps += 1
            if record_frames:
                result.frames.append(obs["image"])
            if terminated or truncated:
                result.success = terminated
                return result


def _run_episodes(make_policy_for: Callable[[str], Policy], jobs: list[tuple[str, int]], image_size: int,
                  camera: str, max_steps: int, execute_steps: int | None, progress: Any = None) -> list[Rollout]:
    """Rollouts of (task, seed) jobs, one environment and policy per task, in job order."""
    results, env, policy, current = [], None, None, None
    for task, seed in jobs:
        if task != current:
            if env is not None:
                env.close()
            env, policy, current = MetaWorldEnv(task, image_size, camera, max_steps), make_policy_for(task), task
        results.append(rollout(policy, env, seed, execute_steps))
        if progress is not None:
            progress.update(1)
    if env is not None:
        env.close()
    return results


def _worker_episodes(args: tuple) -> list[Rollout]:
    return _run_episodes(*args)


def evaluate_policy(make_policy_for: Callable[[str], Policy], tasks: Sequence[str] = MT10_TASKS,
                    episodes: int = 5, seeds: dict[str, list[int]] | None = None, image_size: int = 64,
                    camera: str = "front", max_steps: int = 200, execute_steps: int | None = None,
                    progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Per-task and average success with standard errors, mean episode length and policy latency per chunk.

    `workers > 1` runs the episodes in that many processes (spawned; `make_policy_for` must then be picklable, like
    `PipelinePolicy`), each on its own share of the tasks."""
    from tqdm.auto import tqdm

    jobs = [(task, seed) for task in tasks for seed in ((seeds or {}).get(task) or eval_seeds(task, episodes))]
    settings = (image_size, camera, max_steps, execute_steps)
    if workers > 1:
        import multiprocessing

        shares = [[job for i, job in enumerate(jobs) if i * workers // len(jobs) == w] for w in range(workers)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rollouts = [r for share in pool.map(_worker_episodes, [(make_policy_for, share, *settings)
                                                                   for share in shares]) for r in share]
    else:
        with tqdm(total=len(jobs), desc="mt10 rollouts", disable=not progress) as bar:
            rollouts = _run_episodes(make_policy_for, jobs, *settings, progress=bar)
    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        done = [r for r in rollouts if r.task == task]
        success = float(np.mean([r.success for r in done]))
        per_task[task] = {"success": success, "standard_error": float(np.sqrt(success * (1 - success) / len(done))),
                          "mean_steps": float(np.mean([r.steps for r in done])), "seeds": [r.seed for r in done],
                          "successes": [r.success for r in done]}
    latencies = [s for r in rollouts for s in r.chunk_latency_s]
    stratified = np.sqrt(sum(v["standard_error"] ** 2 for v in per_task.values())) / len(per_task)
    return {"average_success": float(np.mean([v["success"] for v in per_task.values()])),
            "standard_error": float(stratified),
            "n": len(rollouts),  # episodes in all
            "mean_steps": float(np.mean([v["mean_steps"] for v in per_task.values()])),
            "latency_per_chunk_s": float(np.mean(latencies)) if latencies else None,
            "median_latency_per_chunk_s": float(np.median(latencies)) if latencies else None,
            "per_task": per_task,
            "settings": {"episodes": episodes, "image_size": image_size, "camera": camera, "max_steps": max_steps,
                         "execute_steps": execute_steps, "workers": workers}}
