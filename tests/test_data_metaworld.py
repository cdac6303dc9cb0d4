"""Meta-World writer: successful expert episodes whose stored actions replay to success, upright frames."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco (metaworld does)
pytest.importorskip("webdataset")
pytest.importorskip("metaworld")

from shard_reading import read_split, shard_paths  # noqa: E402
from unimask.training.data.format import content_hash, read_card  # noqa: E402


def _episodes(directory, split):
    episodes = defaultdict(dict)
    for sample in read_split(directory, split):
        meta = sample["meta"]
        episodes[(meta["task_name"], meta["seed"])][meta["step"]] = sample
    return episodes


@pytest.fixture(scope="module")
def mw_dataset(tmp_path_factory):
    from unimask.training.data.writers.metaworld import write_metaworld

    out = tmp_path_factory.mktemp("mw") / "data"
    card = write_metaworld(out, tasks=["reach-v3", "push-v3"], train_episodes=2, test_episodes=1, workers=1,
                           horizon=8, shard_size=100, progress=False, seed=7)
    return out, card


def test_metaworld_writer_keeps_successful_episodes_that_replay_to_success(mw_dataset):
    from unimask.training.envs.metaworld import INSTRUCTIONS, make_env, replay_episode

    out, card = mw_dataset
    assert read_card(out) == card
    assert card["stats"]["episodes"] == {"train": {"reach-v3": 2, "push-v3": 2}, "test": {"reach-v3": 1, "push-v3": 1}}
    assert card["action_dim"] == 4 and card["state_dim"] == 4 and card["image_size"] == [64, 64]
    train, test = _episodes(out, "train"), _episodes(out, "test")
    assert not set(train) & set(test), "an initial state (task, seed) is in both splits"
    train_hashes = {content_hash(s["image"]) for ep in train.values() for s in ep.values()}
    test_hashes = {content_hash(s["image"]) for ep in test.values() for s in ep.values()}
    assert not train_hashes & test_hashes
    envs = {}
    for (task, seed), steps in {**train, **test}.items():
        length = steps[0]["meta"]["episode_length"]
        assert sorted(steps) == list(range(length)) and length <= 200
        # The action chunk of step t holds actions t..t+7; row 0 of every step is the episode's action sequence.
        actions = np.stack([steps[t]["actions"][0] for t in range(length)])
        assert actions.dtype == np.float32 and np.abs(actions).max() <= 1.0
        for t in range(length):
            valid = min(8, length - t)
            assert steps[t]["meta"]["valid_steps"] == valid
            np.testing.assert_array_equal(steps[t]["actions"][:valid], actions[t:t + valid])
            np.testing.assert_array_equal(steps[t]["actions"][valid:], np.repeat(actions[-1:], 8 - valid, 0))
            assert steps[t]["text"] in INSTRUCTIONS[task] and steps[t]["image"].shape == (64, 64, 3)
        env = envs.setdefault(task, make_env(task))
        success, states = replay_episode(env, seed, actions)
        assert success, f"replaying {task} seed {seed} did not reach success"
        np.testing.assert_array_equal(states, np.stack([steps[t]["state"] for t in range(length)]))
        # Success is reached exactly at the last stored step, not earlier.
        success_early, _ = replay_episode(env, seed, actions[:-1])
        assert not success_early


def test_frames_are_upright_for_free_and_named_cameras():
    """The goal marker is drawn where the camera projection puts it, and world-up is image-up."""
    import mujoco

    from unimask.training.envs.metaworld import FrameRenderer, make_env, reset_episode

    env = make_env("reach-v3")
    model = env.model
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    for camera in ("front", "corner"):
        renderer = FrameRenderer(env, 64, camera)
        assert renderer.rotate == (camera == "corner")  # Meta-World's corner camera has its up vector pointing down
        fovy = model.vis.global_.fovy if camera == "front" else model.cam_fovy[
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)]
        for seed in (0, 1):
            reset_episode(env, seed)
            with_goal = renderer.render().astype(int)
            rgba = model.site_rgba[goal].copy()
            model.site_rgba[goal, 3] = 0
            without = renderer.render().astype(int)
            model.site_rgba[goal] = rgba
            rows, _ = np.nonzero(np.abs(with_goal - without).sum(-1) > 30)
            assert len(rows) >= (7 if camera == "front" else 1)  # the default camera shows the goal clearly
            gl = renderer.renderer.scene.camera[0]
            pos, forward, up = (np.array(v) for v in (gl.pos, gl.forward, gl.up))

            def final_row(point):
                v = point - pos
                raw = (0.5 - 0.5 * (v @ up) / (v @ forward) / np.tan(np.deg2rad(fovy) / 2)) * 64
                return 64 - raw if renderer.rotate else raw

            site = env.data.site_xpos[goal]
            assert abs(rows.mean() - final_row(site)) < 3, (camera, rows.mean(), final_row(site))
            assert final_row(site - np.array([0, 0, 0.3])) > final_row(site)  # lower in the world, lower in the image
        renderer.close()


def test_metaworld_bad_options_raise(tmp_path):
    from unimask.training.data.writers.metaworld import write_metaworld
    from unimask.training.data.format import DataError

    with pytest.raises(DataError, match="MT10"):
        write_metaworld(tmp_path / "x", tasks=["assembly-v3"])
    with pytest.raises(DataError, match="camera"):
        write_metaworld(tmp_path / "y", camera="nowhere")


@pytest.mark.slow
def test_worker_processes_give_the_same_shards_as_one_process(tmp_path, mw_dataset):
    from unimask.training.data.writers.metaworld import write_metaworld

    out, card = mw_dataset
    parallel = write_metaworld(tmp_path / "par", tasks=["reach-v3", "push-v3"], train_episodes=2, test_episodes=1,
                               workers=2, horizon=8, shard_size=100, progress=False, seed=7)
    assert parallel["episode_seeds"] == card["episode_seeds"]
    for split in ("train", "test"):
        for a, b in zip(shard_paths(out, split), shard_paths(tmp_path / "par", split)):
            assert open(a, "rb").read() == open(b, "rb").read()
