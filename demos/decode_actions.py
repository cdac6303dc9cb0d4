"""Decode an action chunk for a Meta-World observation (or an image file) and plot it.

    python -m unimask.demos.decode_actions --checkpoint runs/quickstart/model --task drawer-open-v3 --seed 100000000
"""

import argparse

import numpy as np
from PIL import Image

from unimask import UnifiedPipeline
from unimask.training.evaluation.robot import MT10_TASKS, MetaWorldEnv
from unimask.training.report import line_plot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model", help="exported model folder")
    parser.add_argument("--task", default="drawer-open-v3", choices=MT10_TASKS)
    parser.add_argument("--seed", type=int, default=100_000_000, help="episode seed of the observation")
    parser.add_argument("--image", default="", help="use this observation image instead of the simulator's")
    parser.add_argument("--steps", type=int, default=2, help="decoding steps for the chunk")
    parser.add_argument("--plot", default="actions.png")
    args = parser.parse_args()

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    env = MetaWorldEnv(args.task)
    obs, _ = env.reset(seed=args.seed)
    env.close()
    image = np.asarray(Image.open(args.image).convert("RGB")) if args.image else obs["image"]
    state = obs["state"][None] if pipe.uses_state else None
    chunk = pipe.act([image], [obs["instruction"]], state=state, steps=args.steps)[0]
    print(f"instruction: {obs['instruction']}")
    print("step  " + "  ".join(f"a{d:<7}" for d in range(chunk.shape[1])))
    for t, row in enumerate(chunk):
        print(f"{t:<5} " + "  ".join(f"{v:+.4f}" for v in row))
    line_plot({f"a{d}": chunk[:, d].tolist() for d in range(chunk.shape[1])}, args.task).save(args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
