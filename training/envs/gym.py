"""`MetaWorldEnv`: one MT10 task as a gymnasium environment, observed the way LeRobot names its observations.

    import gymnasium, unimask.training.envs
    env = gymnasium.make("unimask/MetaWorld-v0", task="drawer-open-v3", seed=0)
    obs, info = env.reset()
    obs["observation.image"]   # uint8 [S, S, 3], the camera and size of the `metaworld` dataset writer
    obs["observation.state"]   # float32 [4]: end-effector x, y, z (metres) and gripper opening
    obs["task"]                # the instruction, a str

The keys are the names LeRobot's policies and datasets use for Meta-World (`observation.image`, `observation.state`;
`task` for the instruction, as its evaluation loop adds it), the values unbatched and the frames HWC uint8 as a
LeRobot dataset stores them. LeRobot's own env returns `pixels` / `agent_pos` and its `preprocess_observation`
renames, batches and scales them (CHW floats in [0, 1]); here the renaming is done, and a unimask policy reads the
observation as it is. Data converted with `unimask data lerobot` has the same fields.
`observation.environment_state` is the full 39-number Meta-World observation (object and goal positions): only
oracle baselines may read it. `terminated` is success (also `info["is_success"]`), `truncated` is the step cap.

Seeds: `reset(seed=s)` starts Meta-World's episode `s` exactly (the evaluation seeds of `evaluate_policy`). Later
resets without a seed continue with s + 1, s + 2, ...; an environment never seeded draws its first seed at random and
reports every episode's seed in `info["seed"]`, so any episode can be replayed.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium
import numpy as np

from unimask.training.envs.metaworld import (ACTION_DIM, INSTRUCTIONS, MT10_TASKS, STATE_DIM, FrameRenderer,
                                             make_env, reset_episode)

IMAGE_KEY = "observation.image"
STATE_KEY = "observation.state"
ENVIRONMENT_STATE_KEY = "observation.environment_state"
INSTRUCTION_KEY = "task"
ENV_ID = "unimask/MetaWorld-v0"
FPS = 80  # Meta-World's control rate as LeRobot's configuration records it
RAW_OBSERVATION_DIM = 39


class MetaWorldEnv(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(self, task: str, image_size: int = 64, camera: str = "front", max_steps: int = 200,
                 instruction: str | None = None, seed: int | None = None, render_mode: str | None = "rgb_array"):
        if task not in MT10_TASKS:
            raise ValueError(f"`task` must be one of {MT10_TASKS}, got {task!r}.")
        if max_steps < 1:
            raise ValueError(f"`max_steps` must be >= 1, got {max_steps}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"`render_mode` must be 'rgb_array' or None, got {render_mode!r}.")
        self.task = task
        self.max_steps = max_steps
        self.instruction = instruction or INSTRUCTIONS[task][0]
        self.render_mode = render_mode
        self._env = make_env(task)
        self._renderer = FrameRenderer(self._env, image_size=image_size, camera=camera)
        self.observation_space = gymnasium.spaces.Dict({
            IMAGE_KEY: gymnasium.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            STATE_KEY: gymnasium.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            ENVIRONMENT_STATE_KEY: gymnasium.spaces.Box(-np.inf, np.inf, (RAW_OBSERVATION_DIM,), np.float64),
            INSTRUCTION_KEY: gymnasium.spaces.Text(max_length=max(200, len(self.instruction)),
                                                   charset=string.printable),
        })
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._next_seed = seed
        self._steps = 0
        self._raw: np.ndarray | None = None
        self._frame: np.ndarray | None = None
        # Set by a caller that will not look at the next observations' frames (a receding-horizon rollout executing
        # the inside of a chunk): they then repeat the last frame instead of rendering, which is ~90% of a step's
        # time. A reset always renders.
        self.skip_frames = False

    def _observation(self) -> dict[str, Any]:
        if self._frame is None or not self.skip_frames:
            self._frame = self._renderer.render()
        return {IMAGE_KEY: self._frame, STATE_KEY: self._raw[:STATE_DIM].astype(np.float32),
                ENVIRONMENT_STATE_KEY: self._raw.astype(np.float64), INSTRUCTION_KEY: self.instruction}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict]:
        super().reset(seed=seed)
        if seed is None:
            seed = self._next_seed if self._next_seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        self._next_seed = int(seed) + 1
        self._raw = reset_episode(self._env, int(seed))
        self._steps = 0
        self._frame = None
        return self._observation(), {"task": self.task, "seed": int(seed), "is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict]:
        if self._raw is None:
            raise RuntimeError("call reset() before step().")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"`action` must be {ACTION_DIM} finite numbers, got {action!r}.")
        self._raw, reward, _, _, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        success = bool(info["success"])
        return self._observation(), float(reward), success, self._steps >= self.max_steps, {"is_success": success}

    def render(self) -> np.ndarray | None:
        return self._renderer.render() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self._renderer.close()


def register() -> None:
    """Make `gymnasium.make(ENV_ID, task=...)` build a `MetaWorldEnv` (done on `import unimask.training.envs`)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:MetaWorldEnv")
