"""Meta-World MT10 for unimask: the tasks and their instructions, the seeded environment, the offscreen renderer,
and the scripted experts. The gymnasium environment a policy runs in is `unimask.training.envs.gym.MetaWorldEnv`.

Seeding: `env.seed(s)`, `seeded_rand_vec=True`, `_freeze_rand_vec=False` (`reset(seed=...)` is ignored by
Meta-World); episodes are capped by the caller (200 steps), not by Meta-World.

Camera (measured with `benchmarks/metaworld_camera.py`): the default `front` camera looks at the workspace from the
far side of the table (free camera, lookat (0, 0.65, 0.12), distance 1.0, azimuth -90, elevation -40). At 64x64 the
goal marker of reach / push / pick-place covers at least 10 / 8 / 10 pixels (mean 12 / 9 / 12 over seeds), against
2-3 with Meta-World's `corner` camera (4-5 even at 96 px), and the end effector, objects and goals of all ten tasks
stay inside the frame over whole expert episodes. `mujoco.Renderer` returns upright images for this camera;
Meta-World's own `corner*` cameras have their up vector pointing down, so their frames come out upside down and are
rotated by 180 degrees here (flipping only the rows would also mirror left and right).

Rendering: `MUJOCO_GL=egl` (set before mujoco is imported unless the user chose another backend), shadows and
reflections off, `model.vis.quality.offsamples = 0`: ~10 ms per 64 px frame on one core instead of 150+.
After `reset()` Meta-World leaves derived positions (bodies, sites) stale until the first step, so
`mujoco.mj_forward` runs once after every reset (recording and replay alike) before the first frame is rendered.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from unimask.training.data.format import DataError

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


def ensure_gl() -> None:
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
    ensure_gl()
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
        ensure_gl()
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
    frame_steps: np.ndarray | None = None  # (K,) the steps `frames` were rendered at (None: every step)


def record_episode(task: str, env: Any, policy: Any, renderer: FrameRenderer | None, seed: int,
                   max_steps: int = 200, frame_stride: int = 1, frame_offset: int = 0) -> Episode:
    """Run the expert for one seeded episode, stopping at the first success or after `max_steps` steps. Frames are
    rendered at steps `frame_offset, frame_offset + frame_stride, ...` only (rendering is ~90% of an episode's time;
    the physics and the expert run every step)."""
    obs = reset_episode(env, seed)
    frames, actions, states = [], [], []
    success = False
    for t in range(max_steps):
        if renderer is not None and t % frame_stride == frame_offset % frame_stride:
            frames.append(renderer.render())
        states.append(obs[:STATE_DIM].astype(np.float32))
        action = np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32)
        actions.append(action)
        obs, _, _, _, info = env.step(action)
        if info["success"]:
            success = True
            break
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    steps = np.arange(frame_offset % frame_stride, len(actions), frame_stride) if frame_stride > 1 else None
    return Episode(task, seed, success, np.stack(frames) if frames else empty, np.stack(actions),
                   np.stack(states), len(actions) if success else None, steps)


def replay_episode(env: Any, seed: int, actions: np.ndarray) -> tuple[bool, np.ndarray]:
    """Apply recorded actions from the same seeded reset; returns (success at the last step, states [T, 4])."""
    obs = reset_episode(env, seed)
    states, info = [], {"success": False}
    for action in np.asarray(actions, dtype=np.float32):
        states.append(obs[:STATE_DIM].astype(np.float32))
        obs, _, _, _, info = env.step(action)
    return bool(info["success"]), np.stack(states)
