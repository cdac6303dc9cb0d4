"""What each part of "conditioning that learns" adds: one family of runs on one quickstart run's data and tokenizers.

Every variant trains the quickstart's model with the same steps, batch and seed from the run's own `train.yaml`,
changing one group of settings, then is evaluated on captions (digits), text to image (digits judge) and
closed-loop MT10 success:

  vq          the image conditions as VQ codes, the old objective (linear action masking, p_uncond 0.1 on every
              task, one target per condition), one process
  +pixels     image conditions (captions, robot observation) through the pixel encoder
  +objective  the run's masking: whole-target masking (half the action targets, 30% of the captions),
              condition dropout only where guidance uses it (t2i), the ordinal (HL-Gauss) action loss
  +ranks      the same on one rank per core (the quickstart's setting)

    OMP_NUM_THREADS=1 python benchmarks/ablation.py --run runs/quickstart --variants vq,+pixels,+objective,+ranks
    OMP_NUM_THREADS=1 python benchmarks/ablation.py --run runs/quickstart --variants vq --ranks 0   # vq on every core

Results go to RUN/ablation/<variant>/ and RUN/ablation/results.json; the table is printed (docs/results.md, "Ablation").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from tables import markdown_table  # benchmarks/tables.py, beside this script

VARIANTS = ("vq", "+pixels", "+objective", "+ranks")


def variant_config(base: dict, name: str, out: Path) -> dict:
    """The run's train config with the settings of variant `name` (each variant keeps the ones before it)."""
    config = json.loads(json.dumps(base))
    order = VARIANTS.index(name)
    if order < VARIANTS.index("+pixels"):
        config["sequence"].pop("conditions", None)
        config["model"].pop("encoders", None)
    if order < VARIANTS.index("+objective"):
        config["masking"] = {"p_uncond": 0.1}
    if order < VARIANTS.index("+ranks"):
        config["train"]["ranks"] = 1
    config["train"]["out"] = str(out / "train")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="a finished quickstart run (data, tokenizers)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {VARIANTS}")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: the run's)")
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per MT10 task")
    parser.add_argument("--ranks", type=int, default=-1,
                        help="train every variant on this many ranks (0: one per core); its rows are named "
                             "'<variant> @ ranks N'")
    args = parser.parse_args()

    from unimask.config import from_dict
    from unimask.training.evaluation.cli import evaluate_checkpoint
    from unimask.training.launch import run_training
    from unimask.training.train_config import TrainConfig

    run = Path(args.run)
    base = yaml.safe_load((run / "train.yaml").read_text())
    if args.steps:
        base["train"]["steps"] = args.steps
    rows = {}
    results_path = run / "ablation" / "results.json"
    if results_path.is_file():
        rows = json.loads(results_path.read_text())
    for name in filter(None, args.variants.split(",")):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {VARIANTS}.")
        key = name if args.ranks < 0 else f"{name} @ ranks {args.ranks}"
        out = run / "ablation" / key.replace(" ", "_")
        config = variant_config(base, name, out)
        if args.ranks >= 0:
            config["train"]["ranks"] = args.ranks
        started = time.time()
        run_training(from_dict(TrainConfig, config), export=str(out / "model"))
        minutes = (time.time() - started) / 60
        results = evaluate_checkpoint(out / "model", run / "data", out / "eval", tasks=("caption", "t2i", "vla"),
                                      caption_limit=200, t2i_per_class=20, vla_episodes=args.episodes,
                                      judge_dir=run / "judge")
        rows[key] = {"train_minutes": minutes, "caption": results["caption"]["digit_accuracy"],
                      "t2i": results["t2i"]["judge_accuracy"], "mt10": results["vla"]["average_success"],
                      "mt10_episodes": results["vla"]["n"]}
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(rows, indent=2))
    print(markdown_table(["variant", "train minutes", "digits caption accuracy", "t2i judge accuracy",
                          "MT10 success (episodes)"],
                         [[name, f"{row['train_minutes']:.1f}", f"{row['caption']:.3f}", f"{row['t2i']:.3f}",
                           f"{row['mt10']:.3f} ({row['mt10_episodes']})"] for name, row in rows.items()]))


if __name__ == "__main__":
    main()
