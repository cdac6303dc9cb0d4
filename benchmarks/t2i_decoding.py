"""How do MaskGIT's sampling temperatures change the text-to-image metrics? A sweep on one run.

    OMP_NUM_THREADS=1 python benchmarks/t2i_decoding.py --run runs/quickstart
    OMP_NUM_THREADS=1 python benchmarks/t2i_decoding.py --run runs/full --seeds 7 --shapes 200

For every (temperature, choice temperature) pair it generates `--per-class` digits of each class from the test
captions with each seed in `--seeds` and prints the judge's accuracy (the `unimask eval --task t2i` metric, same
judge, same prompts, `suite.T2I_DECODING`'s steps and guidance), and with `--shapes N` the colour / all-attributes accuracy of N generated shapes scenes (the
`--task shapes` metric). `temperature` samples each token from softmax(logits / T); `choice_temperature` scales the
Gumbel noise MaskGIT adds to the confidences that decide which sampled tokens are kept (annealed to 0).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from unimask.pipeline import UnifiedPipeline
from unimask.training.evaluation import suite
from unimask.training.evaluation.judge import ImageJudge

GRID = [(1.0, 4.5), (1.0, 1.0), (0.5, 4.5), (0.5, 1.0)]  # (temperature, choice_temperature); MaskGIT's is first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="a quickstart run (model/, judge/, data/digits)")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seeds", default="7,8", help="comma-separated generation seeds")
    parser.add_argument("--shapes", type=int, default=0, help="also generate this many shapes scenes per setting")
    parser.add_argument("--out", default="runs/bench_t2i_decoding.json")
    args = parser.parse_args()
    pipe = UnifiedPipeline.from_pretrained(f"{args.run}/model")
    judge = ImageJudge.load(f"{args.run}/judge")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for temperature, choice in GRID:
        start = time.perf_counter()
        scores = [suite.evaluate_digits_t2i(pipe, f"{args.run}/data/digits", judge, per_class=args.per_class,
                                            seed=seed, temperature=temperature,
                                            choice_temperature=choice)["judge_accuracy"] for seed in seeds]
        shapes = {}
        if args.shapes:
            shapes = suite.evaluate_shapes_t2i(pipe, f"{args.run}/data/shapes", limit=args.shapes, seed=seeds[0],
                                               temperature=temperature, choice_temperature=choice)
        rows.append({"temperature": temperature, "choice_temperature": choice, "per_seed": scores,
                     "mean": float(np.mean(scores)), "shapes_color": shapes.get("color_accuracy"),
                     "shapes_all": shapes.get("all_accuracy"), "seconds": time.perf_counter() - start})
        print(f"temperature {temperature}, choice temperature {choice}: judge accuracy "
              f"{rows[-1]['mean']:.3f} (per seed {', '.join(f'{s:.3f}' for s in scores)})"
              + (f"; shapes colour {shapes['color_accuracy']:.3f}, all {shapes['all_accuracy']:.3f}" if shapes else ""),
              flush=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    n = args.per_class * 10 * len(seeds)
    print(f"\n| temperature | choice temperature | digits judge accuracy (n = {n}) | shapes colour / all "
          f"(n = {args.shapes}) |\n|---|---|---|---|")
    for row in rows:
        shapes = f"{row['shapes_color']:.3f} / {row['shapes_all']:.3f}" if args.shapes else "-"
        print(f"| {row['temperature']} | {row['choice_temperature']} | {row['mean']:.3f} | {shapes} |")


if __name__ == "__main__":
    main()
