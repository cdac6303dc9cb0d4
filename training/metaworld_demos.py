"""The `metaworld` dataset: Meta-World MT10 demonstrations from the shipped scripted experts, rendered offline.

Per episode: the task's environment is seeded (`env.seed(s)`, `seeded_rand_vec=True`, `_freeze_rand_vec=False`;
`reset(seed=...)` is ignored by Meta-World), reset, and stepped with `metaworld.policies` until `info["success"]`
or `max_steps` (200). Only successful episodes are kept; failures are counted per task in the card and replaced by
the next seed. Expert actions are clipped to [-1, 1] and cast to float32 *before* they are applied, so the stored
actions replay the episode exactly (`replay_episode`).

Samples are per step (see `unimask.training.episodes`): the RGB frame before action t, one instruction paraphrase,
`actions.npy` [H, 4] (the next H actions, H = 8 by default, last action repeated past the end, `json.valid_steps`),
`state.npy` [4] = the first 4 observation entries (end-effector xyz + gripper opening; not object or goal
positions), and `json` (task, seed, episode, step, ...).

Camera (measured with `benchmarks/metaworld_camera.py`): the default `front` camera looks at the workspace from the
far side of the table (free camera, lookat (0, 0.65, 0.12), distance 1.0, azimuth -90, elevation -40). At 64x64 the
goal marker of reach / push / pick-place covers at least 10 / 8 / 10 pixels (mean 12 / 9 / 12 over seeds), against
2-3 with Meta-World's `corner` camera (4-5 even at 96 px), and the end effector, objects and goals of all ten tasks
stay inside the frame over whole expert episodes. So 64 px stays the default (8x8 VQ codes, like digits and
shapes). `mujoco.Renderer` returns upright images for this camera; Meta-World's own `corner*` cameras have their up
vector pointing down, so their frames come out upside down and are rotated by 180 degrees here (flipping only the
rows would also mirror left and right).

Rendering: `MUJOCO_GL=egl` (set before mujoco is imported unless the user chose another backend), shadows and
reflections off, `model.vis.quality.offsamples = 0`: ~10 ms per 64 px frame on one core instead of 150+.
After `reset()` Meta-World leaves derived positions (bodies, sites) stale until the first step, so
`mujoco.mj_forward` runs once after every reset (recording and replay alike) before the first frame is rendered.

Episodes are produced by worker processes (spawned, each with its own renderer); the parent writes the shards.
Seeds are deterministic: episode candidates of task k in split s use seeds `seed * 10**6 + k * 10**4 + offset + i`
with offset 0 for train and 5000 for test, so train and test never share an initial state; the card lists them.
Train samples go through a seeded shuffle buffer before being written, so every shard mixes tasks and episodes.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .episodes import episode_samples
from .shards import DataError, DatasetWriter

MT10_TASKS = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "reach-v3": ("reach the red target", "move the gripper to the red goal", "touch the red marker with the gripper",
                 "go to the red dot"),
    "push-v3": ("push the puck to the green goal", "slide the red puck onto the green target",
                "push the red puck to the green marker"),
    "pick-place-v3": ("pick up the puck and place it at the blue goal",
                      "grasp the red puck and move it to the blue target",
                      "lift the puck and put it on the blue marker"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open"),
    "drawer-open-v3": ("open the drawer", "pull the drawer out", "slide the drawer open"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut", "slide the drawer closed"),
    "button-press-topdown-v3": ("press the button from the top", "push the red button down", "press the button down"),
    "peg-insert-side-v3": ("insert the peg into the hole", "push the green peg into the hole in the box",
                           "put the peg in the hole from the side"),
    "window-open-v3": ("open the window", "slide the window open", "push the window sash open"),
    "window-close-v3": ("close the window", "slide the window shut", "push the window sash closed"),
}
CAMERAS: dict[str, dict[str, Any]] = {
    # Free cameras: lookat (x, y, z) in metres, distance, azimuth and elevation in degrees.
    "front": {"lookat": (0.0, 0.65, 0.12), "distance": 1.0, "azimuth": -90.0, "elevation": -40.0},
    "front-oblique": {"lookat": (0.0, 0.65, 0.12), "distance": 1.0, "azimuth": -120.0, "elevation": -40.0},
}
NAMED_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
STATE_DIM = 4
ACTION_DIM = 4
TEST_SEED_OFFSET = 5000


def episode_seed(seed: int, task_index: int, split: str, i: int) -> int:
    if i >= TEST_SEED_OFFSET:
        raise DataError(f"at most {TEST_SEED_OFFSET} episode candidates per task and split, got index {i}.")
    return seed * 10**6 + task_index * 10**4 + (TEST_SEED_OFFSET if split == "test" else 0) + i


def _ensure_gl() -> None:
    # mujoco reads MUJOCO_GL at import; EGL renders headless without a display. A user's own choice wins.
    os.environ.setdefault("MUJOCO_GL", "egl")
    # torchvision loads its bundled CUDA runtime on import; importing it after Mesa has made an EGL context
    # segfaults (torch 2.14.1 / torchvision 0.29.1, measured), and timm/diffusers import it lazily. Load it first.
    import torchvision  # noqa: F401


def make_env(task: str):
    """A Meta-World MT10 environment with the goal in the observation, seedable per episode via `env.seed(s)`.

    Built from the task's class and kwargs directly (one env, ~0.3 s) rather than `metaworld.MT10()` (which builds
    every task and 500 goals, ~10 s).
    """
    _ensure_gl()
    import metaworld
    from metaworld.env_dict import MT10_V3, MT10_V3_ARGS_KWARGS

    if task not in MT10_V3:
        raise DataError(f"unknown Meta-World MT10 task {task!r}; choose from {list(MT10_V3)}.")
    cls = MT10_V3[task]
    kwargs = dict(MT10_V3_ARGS_KWARGS[task]["kwargs"])
    kwargs.pop("task_id", None)
    env = cls()
    # rand_vec is a placeholder: un-freezing it below makes every reset draw a new one from env.np_random.
    data = dict(kwargs, rand_vec=np.zeros(env._random_reset_space.low.size), env_cls=cls, partially_observable=False)
    env.set_task(metaworld.Task(env_name=task, data=pickle.dumps(data)))
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    env.max_path_length = 10**6  # we cap episodes ourselves; Meta-World would raise after 500 steps
    return env


def make_policy(task: str):
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()


def reset_episode(env: Any, seed: int) -> np.ndarray:
    """Seed and reset `env`; returns the first observation. Positions are refreshed so the first frame is right."""
    import mujoco

    env.seed(int(seed))
    obs, _ = env.reset()
    mujoco.mj_forward(env.model, env.data)
    return obs


class FrameRenderer:
    """Offscreen renderer of one environment's scene from a fixed camera (uint8 [S, S, 3], upright)."""

    def __init__(self, env: Any, image_size: int = 64, camera: str = "front"):
        _ensure_gl()
        import mujoco

        if camera not in CAMERAS and camera not in NAMED_CAMERAS:
            raise DataError(f"unknown camera {camera!r}; choose from {sorted(CAMERAS)} or Meta-World's "
                            f"{NAMED_CAMERAS}.")
        if image_size < 16:
            raise DataError(f"`image_size` must be >= 16, got {image_size}.")
        self.env = env
        self.model = env.model
        self.model.vis.quality.offsamples = 0
        try:
            self.renderer = mujoco.Renderer(self.model, image_size, image_size)
        except Exception as err:  # noqa: BLE001 - mujoco raises FatalError or a GL-specific error here
            raise DataError(
                f"mujoco could not create an offscreen renderer ({type(err).__name__}: {err}). Headless rendering "
                f"needs MUJOCO_GL=egl (or osmesa) set before mujoco or metaworld is first imported; MUJOCO_GL is "
                f"{os.environ.get('MUJOCO_GL')!r} here.") from err
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        if camera in CAMERAS:
            spec = CAMERAS[camera]
            self.camera: Any = mujoco.MjvCamera()
            self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
            self.camera.lookat[:] = spec["lookat"]
            self.camera.distance = spec["distance"]
            self.camera.azimuth = spec["azimuth"]
            self.camera.elevation = spec["elevation"]
        else:
            self.camera = camera
        self.renderer.update_scene(env.data, camera=self.camera)
        # A camera whose up vector points below the horizon shows the world upside down: rotate those frames.
        self.rotate = float(self.renderer.scene.camera[0].up[2]) < 0.0

    def render(self) -> np.ndarray:
        self.renderer.update_scene(self.env.data, camera=self.camera)
        frame = self.renderer.render()
        if self.rotate:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def close(self) -> None:
        self.renderer.close()


@dataclass
class Episode:
    task: str
    seed: int
    success: bool
    frames: np.ndarray  # (T, S, S, 3) uint8
    actions: np.ndarray  # (T, 4) float32, applied as stored
    states: np.ndarray  # (T, 4) float32: obs[:4] before each action
    success_step: int | None = None  # number of steps taken when success was first reported


def record_episode(task: str, env: Any, policy: Any, renderer: FrameRenderer | None, seed: int,
                   max_steps: int = 200) -> Episode:
    """Run the expert for one seeded episode, stopping at the first success or after `max_steps` steps."""
    obs = reset_episode(env, seed)
    frames, actions, states = [], [], []
    success = False
    for _ in range(max_steps):
        if renderer is not None:
            frames.append(renderer.render())
        states.append(obs[:STATE_DIM].astype(np.float32))
        action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)
        actions.append(action)
        obs, _, _, _, info = env.step(action)
        if info["success"]:
            success = True
            break
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    return Episode(task, seed, success, np.stack(frames) if frames else empty, np.stack(actions),
                   np.stack(states), len(actions) if success else None)


def replay_episode(env: Any, seed: int, actions: np.ndarray) -> tuple[bool, np.ndarray]:
    """Apply recorded actions from the same seeded reset; returns (success at the last step, states [T, 4])."""
    obs = reset_episode(env, seed)
    states, info = [], {"success": False}
    for action in np.asarray(actions, dtype=np.float32):
        states.append(obs[:STATE_DIM].astype(np.float32))
        obs, _, _, _, info = env.step(action)
    return bool(info["success"]), np.stack(states)


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
        episode = record_episode(job.task, env, policy, renderer, seed, job.max_steps)
        if not episode.success:
            result.rejected.append(seed)
            continue
        index = job.first_index + offset
        rng = np.random.default_rng([job.sample_seed, seed])
        samples = list(episode_samples(f"mw-{job.split}-{job.task}", index, episode.frames, episode.actions,
                                       episode.states, instructions, job.horizon, rng, job.split, "metaworld",
                                       {"task_name": job.task, "seed": seed}))
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
                    max_steps: int = 200, workers: int = 0, episodes_per_job: int = 10, seed: int = 0,
                    shard_size: int = 2000, shuffle_buffer: int = 4000, progress: bool = True,
                    command: str | None = None) -> dict[str, Any]:
    """Render expert demonstrations of `tasks` into `out`; `*_episodes` are successful episodes per task.

    `workers=0` uses one process per CPU core; `workers=1` runs in this process (no subprocess).
    """
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in MT10_TASKS]
    if unknown or not tasks:
        raise DataError(f"`tasks` must be a non-empty subset of MT10 {list(MT10_TASKS)}, got {tasks}.")
    if camera not in CAMERAS and camera not in NAMED_CAMERAS:
        raise DataError(f"unknown camera {camera!r}; choose from {sorted(CAMERAS)} or {list(NAMED_CAMERAS)}.")
    for name, value, low in (("train_episodes", train_episodes, 0), ("test_episodes", test_episodes, 0),
                             ("horizon", horizon, 1), ("max_steps", max_steps, 1),
                             ("episodes_per_job", episodes_per_job, 1)):
        if value < low:
            raise DataError(f"`{name}` must be >= {low}, got {value}.")
    if train_episodes + test_episodes == 0:
        raise DataError("`train_episodes` and `test_episodes` are both 0; nothing to write.")
    workers = workers or (os.cpu_count() or 1)
    _ensure_gl()

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
                                             first, image_size, camera, max_steps, horizon, seed))
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
