"""Simulated environments a unimask policy runs in: a public entry point.

    import gymnasium
    import unimask.training.envs                       # registers unimask/MetaWorld-v0 (needs the `robot` extra)

    env = gymnasium.make("unimask/MetaWorld-v0", task="drawer-open-v3", image_size=64, max_steps=200)
    obs, info = env.reset(seed=100_000_000)             # obs[IMAGE_KEY], obs[STATE_KEY], obs[INSTRUCTION_KEY]

`MT10_TASKS` and `INSTRUCTIONS` (each task's instruction paraphrases) need nothing beyond the core install; the
environment and the observation keys need gymnasium, and stepping it needs Meta-World and MuJoCo.
"""

from .metaworld import INSTRUCTIONS, MT10_TASKS

__all__ = ["INSTRUCTIONS", "MT10_TASKS"]

try:
    import gymnasium  # noqa: F401
except ImportError:  # the environments need the robot extra; without it nothing is registered
    pass
else:
    from .gym import ENV_ID, IMAGE_KEY, INSTRUCTION_KEY, STATE_KEY, register

    __all__ += ["ENV_ID", "IMAGE_KEY", "INSTRUCTION_KEY", "STATE_KEY"]
    register()
