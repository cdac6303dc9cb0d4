"""The scripted Meta-World expert as an oracle policy factory for the evaluation tests (picklable, so worker
processes can run it); it reads the privileged observation and returns one-step chunks."""

import numpy as np


class ExpertPolicy:
    def __call__(self, task: str):
        from unimask.training.envs.metaworld import make_policy

        expert = make_policy(task)
        return lambda obs: np.clip(expert.get_action(obs["observation.environment_state"]), -1, 1)[None]
