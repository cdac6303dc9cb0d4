"""Decode an action chunk for a Meta-World observation (or an image file), print it and plot it.

    python -m unimask.demos.decode_actions --checkpoint runs/quickstart/model --task drawer-open-v3 --seed 100000000

The observation is the first frame of the task's episode `--seed` (or `--image`); the instruction and, for
checkpoints trained with it, the proprioceptive state come from that episode. Actions are in real units.
"""

from __future__ import annotations

import argparse

import gymnasium
import numpy as np
from PIL import Image

from unimask import UnifiedPipeline
from unimask.training.envs import ENV_ID, IMAGE_KEY, INSTRUCTION_KEY, MT10_TASKS, STATE_KEY
from unimask.training.plots import action_chunk_plot


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model", help="exported model folder")
    parser.add_argument("--task", default="drawer-open-v3", choices=MT10_TASKS)
    parser.add_argument("--seed", type=int, default=100_000_000, help="episode seed (>= 1e8: not in training data)")
    parser.add_argument("--image", default="", help="use this picture as the observation instead")
    parser.add_argument("--steps", type=int, default=1, help="decoding steps for the chunk")
    parser.add_argument("--plot", default="actions.png", help="where to save the chart")
    args = parser.parse_args(argv)

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    # Render at the checkpoint's image resolution, as the training frames were.
    env = gymnasium.make(ENV_ID, task=args.task, image_size=pipe.image_size or 64)
    obs, _ = env.reset(seed=args.seed)
    env.close()
    image = np.asarray(Image.open(args.image).convert("RGB")) if args.image else obs[IMAGE_KEY]
    state = obs[STATE_KEY][None] if pipe.uses_state else None
    chunk = pipe.act([image], [obs[INSTRUCTION_KEY]], state=state, steps=args.steps)[0]  # (horizon, 4)

    names = ["x", "y", "z", "gripper"]  # end-effector displacement and gripper effort
    instruction = obs[INSTRUCTION_KEY]
    print(f"instruction: {instruction!r}")
    print("step " + "".join(f"{name:>10}" for name in names))
    for t, row in enumerate(chunk):
        print(f"{t:<5}" + "".join(f"{v:>+10.4f}" for v in row))
    action_chunk_plot(chunk, names, f"{instruction} ({args.task}, seed {args.seed})").save(args.plot)
    print(f"plot: {args.plot}")
    return chunk


if __name__ == "__main__":
    main()
