import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from expert_policy import ExpertPolicy  # noqa: E402
from unimask.training.envs.metaworld import MetaWorldEnv  # noqa: E402
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
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8 and obs["image"].std() > 0
    assert obs["state"].shape == (4,) and isinstance(obs["instruction"], str)
    with pytest.raises(ValueError, match="4 finite numbers"):
        env.step(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"shape \[H, 4\]"):
        rollout(lambda o: np.zeros((2, 3)), env, seed=1)
    result = rollout(lambda o: np.zeros((2, 4)), env, seed=1, record_frames=True)
    assert result.steps == 3 and not result.success and len(result.frames) == 4
    with pytest.raises(ValueError, match="`task` must be one of"):
        MetaWorldEnv("fly-v3")
    env.close()
