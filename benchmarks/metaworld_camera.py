"""How visible is the goal, and does the whole workspace stay in frame? Meta-World camera comparison.

For each camera and frame size this prints:
- goal pixels: how many pixels the goal marker covers at reset, for reach / push / pick-place (min and mean over
  seeds), measured by rendering the scene with and without the goal site and counting changed pixels;
- in frame: the fraction of (end effector, object, goal) positions over whole expert episodes of all ten MT10 tasks
  that project inside the image with a 3% margin.

Usage: MUJOCO_GL=egl python benchmarks/metaworld_camera.py [--sizes 64,96] [--seeds 6] [--episodes 2]
One core, about a minute with the defaults. The numbers behind the `front` default of `unimask data metaworld`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from unimask.training.envs.metaworld import (CAMERAS, MT10_TASKS, FrameRenderer, make_env,  # noqa: E402
                                              make_policy, reset_episode)

GOAL_TASKS = ("reach-v3", "push-v3", "pick-place-v3")


def goal_pixels(task: str, camera: str, size: int, seeds: int) -> list[int]:
    import mujoco

    env = make_env(task)
    renderer = FrameRenderer(env, size, camera)
    goal = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    counts = []
    for seed in range(seeds):
        reset_episode(env, 10_000 + seed)
        with_goal = renderer.render().astype(int)
        rgba = env.model.site_rgba[goal].copy()
        env.model.site_rgba[goal, 3] = 0.0
        without = renderer.render().astype(int)
        env.model.site_rgba[goal] = rgba
        counts.append(int((np.abs(with_goal - without).sum(-1) > 30).sum()))
    renderer.close()
    return counts


def expert_points(episodes: int) -> dict[str, np.ndarray]:
    """End-effector, object and goal positions along expert episodes of every MT10 task."""
    points = {}
    for task in MT10_TASKS:
        env, policy = make_env(task), make_policy(task)
        rows = []
        for i in range(episodes):
            obs = reset_episode(env, 20_000 + i)
            for _ in range(200):
                rows += [obs[0:3], obs[4:7], obs[36:39]]
                obs, _, _, _, info = env.step(np.clip(policy.get_action(obs), -1, 1).astype(np.float32))
                if info["success"]:
                    break
        points[task] = np.array(rows)
    return points


def in_frame(points: np.ndarray, camera: str) -> float:
    import mujoco

    env = make_env("reach-v3")
    renderer = FrameRenderer(env, 32, camera)
    reset_episode(env, 0)
    renderer.render()
    gl = renderer.renderer.scene.camera[0]
    pos, forward, up = (np.array(v) for v in (gl.pos, gl.forward, gl.up))
    right = np.cross(forward, up)
    model = env.model
    fovy = model.vis.global_.fovy if camera in CAMERAS else model.cam_fovy[
        mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)]
    renderer.close()
    v = points - pos
    depth = v @ forward
    half = np.tan(np.deg2rad(fovy) / 2)
    sx, sy = 0.5 + 0.5 * (v @ right) / depth / half, 0.5 + 0.5 * (v @ up) / depth / half
    inside = (depth > 0) & (sx > 0.03) & (sx < 0.97) & (sy > 0.03) & (sy < 0.97)
    return float(inside.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", default="corner,corner2,corner3,topview,front,front-oblique")
    parser.add_argument("--sizes", default="64,96")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=2)
    args = parser.parse_args()
    cameras, sizes = args.cameras.split(","), [int(s) for s in args.sizes.split(",")]
    started = time.time()
    points = expert_points(args.episodes)
    header = f"{'camera':<14} {'size':>4}  " + "  ".join(f"{t:>18}" for t in GOAL_TASKS) + "  worst task in frame"
    print("goal pixels at reset as min/mean over seeds; in frame = worst MT10 task's fraction of positions in view")
    print(header)
    for camera in cameras:
        worst = min(in_frame(p, camera) for p in points.values())
        for size in sizes:
            cells = []
            for task in GOAL_TASKS:
                counts = goal_pixels(task, camera, size, args.seeds)
                cells.append(f"{min(counts):>8d} / {np.mean(counts):>6.1f}")
            print(f"{camera:<14} {size:>4}  " + "  ".join(f"{c:>18}" for c in cells) + f"  {worst:>8.3f}")
    print(f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
