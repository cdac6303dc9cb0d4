"""Closed-loop evaluation on Meta-World MT10 through the gymnasium environment `MetaWorldEnv`.

The environment renders the same camera and frame size as the `metaworld` dataset writer and exposes what a policy
may see: the RGB frame, the proprioceptive state (end-effector xyz + gripper) and the instruction, under LeRobot's
keys. `evaluate_policy` runs receding-horizon rollouts: the policy returns an action chunk, the first
`execute_steps` actions are executed, then it re-plans, until success or the step cap.

Asynchronous execution (`delay` d > 0, in control steps) simulates a policy whose inference takes d steps: while the
next chunk is computed from the current observation, the robot keeps executing the next d actions of the current
chunk, so the new chunk's first d actions (planned for a time now past) are skipped and it is executed from index d.
With `inpaint`, the policy is told those d actions (`policy(obs, executed=...)`) and writes its chunk around them:
real-time chunking by inpainting. Every switch from one chunk to the next is measured as the jump in action there
(L2 norm), against the mean change between consecutive actions of one chunk.

Evaluation seeds default to `EVAL_SEED_BASE + task_index * 10**4 + i`, a range the dataset writer never uses for a
data seed below 100 (its seeds are `seed * 10**6 + task_index * 10**4 + i`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from unimask.errors import InputError, check_number
from unimask.training.envs.gym import IMAGE_KEY, MetaWorldEnv
from unimask.training.envs.metaworld import MT10_TASKS

EVAL_SEED_BASE = 10**8
Policy = Callable[..., np.ndarray]  # policy(observation) -> chunk [H, D]; with inpainting also executed=


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
    boundary_jumps: list[float] = field(default_factory=list)  # |a_first_of_new - a_last_of_old| per chunk switch
    action_changes: list[float] = field(default_factory=list)  # |a_t - a_t-1| inside one chunk


class _Episode:
    """Steps one environment, keeping what a rollout measures."""

    def __init__(self, env: Any, result: Rollout, record_frames: bool, obs: dict[str, Any]):
        self.env, self.result, self.record_frames, self.obs = env, result, record_frames, obs
        self.last: np.ndarray | None = None

    def run(self, actions: np.ndarray, new_chunk: bool) -> bool:
        """Execute `actions`; True when the episode ended."""
        for index, action in enumerate(actions):
            if self.last is not None:
                change = float(np.linalg.norm(action - self.last))
                (self.result.boundary_jumps if new_chunk and index == 0 else self.result.action_changes).append(change)
            self.last = action
            # Only the frame after a chunk's last action is read (the policy re-plans from it).
            self.env.skip_frames = not self.record_frames and index < len(actions) - 1
            obs, _, terminated, truncated, _ = self.env.step(action)
            self.obs = obs
            self.result.steps += 1
            if self.record_frames:
                self.result.frames.append(obs[IMAGE_KEY])
            if terminated or truncated:
                self.result.success = bool(terminated)
                return True
        return False


def executed_per_chunk(horizon: int, execute_steps: int | None, delay: int) -> int:
    """Actions executed from each chunk of `horizon` actions (`execute_steps`, or all that `delay` leaves); raises
    `InputError` when the chunk cannot cover them, so an evaluation can refuse before its first rollout."""
    execute = execute_steps or horizon - 2 * delay
    if execute < 1 or execute + 2 * delay > horizon:
        raise InputError(f"a chunk of {horizon} actions cannot cover a delay of {delay} steps and {execute} executed "
                         f"actions: it needs execute_steps + 2 * delay <= {horizon}; lower `execute_steps` "
                         "(--execute-steps) or the delay, or train with a longer action horizon.")
    return execute


def rollout(policy: Policy, env: Any, seed: int, execute_steps: int | None = None, record_frames: bool = False,
            delay: int = 0, inpaint: bool = False) -> Rollout:
    """One receding-horizon episode: ask `policy(observation)` for a chunk [H, D], execute `execute_steps` of it
    (all by default, or all that `delay` leaves), re-plan; `delay` and `inpaint` as the module describes."""
    check_number("delay", delay, 0, integer=True, fix="it counts control steps")
    if inpaint and not delay:
        raise InputError("`inpaint` freezes the actions executed during the inference delay; give `delay` >= 1.")
    obs, _ = env.reset(seed=seed)
    result = Rollout(getattr(env, "task", ""), seed, False, 0)
    episode = _Episode(env, result, record_frames, obs)
    if record_frames:
        result.frames.append(obs[IMAGE_KEY])
    pending = None  # the current chunk's actions that run while the next one is computed
    while True:
        start = time.perf_counter()
        chunk = policy(episode.obs, executed=pending) if inpaint and pending is not None else policy(episode.obs)
        result.chunk_latency_s.append(time.perf_counter() - start)
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != env.action_space.shape[0] or len(chunk) == 0:
            raise ValueError(f"the policy must return an action chunk of shape [H, {env.action_space.shape[0]}], "
                             f"got {chunk.shape}.")
        if pending is not None and episode.run(pending, new_chunk=False):
            return result
        first = delay if pending is not None else 0  # the episode's first chunk is waited for
        execute = executed_per_chunk(len(chunk), execute_steps, delay)
        if episode.run(chunk[first:first + execute], new_chunk=True):
            return result
        pending = chunk[first + execute:first + execute + delay] if delay else None


def _run_episodes(make_policy_for: Callable[[str], Policy], jobs: list[tuple[str, int]], image_size: int,
                  camera: str, max_steps: int, execute_steps: int | None, delay: int = 0, inpaint: bool = False,
                  progress: Any = None) -> list[Rollout]:
    """Rollouts of (task, seed) jobs, one environment and policy per task, in job order."""
    results, env, policy, current = [], None, None, None
    for task, seed in jobs:
        if task != current:
            if env is not None:
                env.close()
            env, policy, current = MetaWorldEnv(task, image_size, camera, max_steps), make_policy_for(task), task
        results.append(rollout(policy, env, seed, execute_steps, delay=delay, inpaint=inpaint))
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
                    progress: bool = True, workers: int = 1, delay: int = 0, inpaint: bool = False) -> dict[str, Any]:
    """Per-task and average success with standard errors, mean episode length, policy latency per chunk, and the
    mean jump in action at chunk switches against the mean change inside a chunk (`delay`, `inpaint`: see above).

    `workers > 1` runs the episodes in that many processes (spawned; `make_policy_for` must then be picklable, like
    `PipelinePolicy`), each on its own share of the tasks."""
    from tqdm.auto import tqdm

    jobs = [(task, seed) for task in tasks for seed in ((seeds or {}).get(task) or eval_seeds(task, episodes))]
    settings = (image_size, camera, max_steps, execute_steps, delay, inpaint)
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
    jumps = [j for r in rollouts for j in r.boundary_jumps]
    changes = [c for r in rollouts for c in r.action_changes]
    stratified = np.sqrt(sum(v["standard_error"] ** 2 for v in per_task.values())) / len(per_task)
    return {"average_success": float(np.mean([v["success"] for v in per_task.values()])),
            "standard_error": float(stratified),
            "n": len(rollouts),  # episodes in all
            "mean_steps": float(np.mean([v["mean_steps"] for v in per_task.values()])),
            "latency_per_chunk_s": float(np.mean(latencies)) if latencies else None,
            "median_latency_per_chunk_s": float(np.median(latencies)) if latencies else None,
            "boundary_jump": float(np.mean(jumps)) if jumps else None,
            "action_change": float(np.mean(changes)) if changes else None,
            "per_task": per_task,
            "settings": {"episodes": episodes, "image_size": image_size, "camera": camera, "max_steps": max_steps,
                         "execute_steps": execute_steps, "workers": workers, "delay": delay,
                         "inpaint": inpaint}}
