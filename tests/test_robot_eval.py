import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

import gymnasium  # noqa: E402

import unimask.training.envs  # noqa: E402,F401  (registers unimask/MetaWorld-v0)
from expert_policy import ExpertPolicy  # noqa: E402
from unimask.training.envs.gym import ENV_ID, ENVIRONMENT_STATE_KEY, IMAGE_KEY, INSTRUCTION_KEY, STATE_KEY, MetaWorldEnv  # noqa: E402
from unimask.training.evaluation.robot import eval_seeds, evaluate_policy, rollout  # noqa: E402


def test_expert_succeeds_and_idle_policy_fails_in_closed_loop():
    result = evaluate_policy(ExpertPolicy(), tasks=["reach-v3", "drawer-open-v3"], episodes=2, progress=False)
    assert result["average_success"] == 1.0 and result["standard_error"] == 0.0
    assert result["per_task"]["reach-v3"]["seeds"] == eval_seeds("reach-v3", 2) and result["n"] == 4
    parallel = evaluate_policy(ExpertPolicy(), tasks=["reach-v3", "drawer-open-v3"], episodes=2, workers=2,
                               progress=False)
    assert parallel["per_task"] == result["per_task"]  # the same episodes, whichever process ran them
    idle = evaluate_policy(lambda task: (lambda obs: np.zeros((8, 4))), tasks=["reach-v3"], episodes=1,
                           max_steps=40, progress=False)
    assert idle["average_success"] == 0.0 and idle["mean_steps"] == 40


def test_env_observations_and_bad_input():
    env = MetaWorldEnv("reach-v3", image_size=32, max_steps=3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))
    obs, info = env.reset(seed=eval_seeds("reach-v3", 1)[0])
    assert obs[IMAGE_KEY].shape == (32, 32, 3) and obs[IMAGE_KEY].dtype == np.uint8 and obs[IMAGE_KEY].std() > 0
    assert obs[STATE_KEY].shape == (4,) and isinstance(obs[INSTRUCTION_KEY], str)
    with pytest.raises(ValueError, match="4 finite numbers"):
        env.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \[H, 4\]"):
        rollout(lambda o: np.zeros((2, 3)), env, seed=1)
    result = rollout(lambda o: np.zeros((2, 4)), env, seed=1, record_frames=True)
    assert result.steps == 3 and not result.success and len(result.frames) == 4
    with pytest.raises(ValueError, match="execute_steps \\+ 2 \\* delay"):
        rollout(lambda o: np.zeros((4, 4)), env, seed=1, delay=2)
    with pytest.raises(ValueError, match="give `delay`"):
        rollout(lambda o: np.zeros((4, 4)), env, seed=1, inpaint=True)
    with pytest.raises(ValueError, match="`task` must be one of"):
        MetaWorldEnv("fly-v3")
    env.close()


def test_gymnasium_make_builds_a_checked_seeded_env_with_lerobot_keys():
    from gymnasium.utils.env_checker import check_env

    checked = MetaWorldEnv("drawer-open-v3", image_size=32, max_steps=5)
    check_env(checked, skip_render_check=False)  # spaces, seeding determinism, step and render contracts
    checked.close()
    env = gymnasium.make(ENV_ID, task="drawer-open-v3", image_size=32, max_steps=5, seed=7)
    assert isinstance(env.unwrapped, MetaWorldEnv)
    first, info = env.reset()
    assert info["seed"] == 7 and first[INSTRUCTION_KEY] == "open the drawer"
    assert env.observation_space.contains(first)
    second, info = env.reset()
    assert info["seed"] == 8
    again, _ = env.reset(seed=7)
    assert np.array_equal(again[IMAGE_KEY], first[IMAGE_KEY]) and np.array_equal(again[STATE_KEY], first[STATE_KEY])
    assert not np.array_equal(second[ENVIRONMENT_STATE_KEY], first[ENVIRONMENT_STATE_KEY])  # another drawer
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert set(info) >= {"is_success"} and env.observation_space.contains(obs)
        if terminated or truncated:
            break
    assert steps == 5 and truncated
    assert env.render().shape == (32, 32, 3)
    env.close()
    unseeded = MetaWorldEnv("reach-v3", image_size=32)
    drawn, info = unseeded.reset()  # a random seed, reported so the episode can be replayed
    replay = MetaWorldEnv("reach-v3", image_size=32)
    replayed = replay.reset(seed=info["seed"])[0][ENVIRONMENT_STATE_KEY]
    assert np.array_equal(replayed, drawn[ENVIRONMENT_STATE_KEY])
    unseeded.close()
    replay.close()
