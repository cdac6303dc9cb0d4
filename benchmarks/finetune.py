"""Fine-tuning a robot policy on a new task from a few demonstrations: train on nine MT10 tasks, then fine-tune that
bundle (`unimask train --init-from`) on 10 demonstrations of the tenth; success on the tenth before and after, on
the nine after (forgetting), and minutes on this machine, for a full fine-tune, LoRA, and a full fine-tune that
replays the nine tasks' data beside the new demonstrations.

    OMP_NUM_THREADS=1 python benchmarks/finetune.py --run runs/quickstart --out runs/finetune

The base model uses the run's recipe (benchmarks/vla_proxy.py) on freshly written MT10 data of the nine tasks; the
run itself is only read for its train.yaml.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from tables import markdown_table  # benchmarks/tables.py, beside this script


def finetune_config(out: Path, run: Path, bundle: Path, streams: list[dict], steps: int, lr: float,
                    lora_rank: int) -> Path:
    recipe = yaml.safe_load((run / "train.yaml").read_text())
    config = {"init": {"bundle": str(bundle), "lora_rank": lora_rank, "lora_alpha": 2.0 * lora_rank},
              "data": {"streams": streams, "batch_size": recipe["data"]["batch_size"], "shuffle_buffer": 1000,
                       "seed": 0},
              "masking": recipe["masking"],
              "optim": {"lr": lr, "warmup": 20},
              "train": {"out": str(out / "train"), "steps": steps, "checkpoint_every": steps, "log_every": 20,
                        "ranks": recipe["train"].get("ranks", 0)}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out / "train.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="quickstart run whose train.yaml is the recipe")
    parser.add_argument("--out", default="runs/finetune")
    parser.add_argument("--new-task", default="window-close-v3", help="the task left out of the base model")
    parser.add_argument("--base-episodes", type=int, default=12, help="demonstrations per base task")
    parser.add_argument("--demos", type=int, default=10, help="demonstrations of the new task")
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (LoRA: 4x)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=20, help="closed-loop episodes on the new task")
    parser.add_argument("--base-task-episodes", type=int, default=5, help="closed-loop episodes per base task")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from unimask.config import load_config
    from unimask.training.data.writers.metaworld import write_metaworld
    from unimask.training.envs.metaworld import MT10_TASKS
    from unimask.training.launch import run_training
    from unimask.training.train_config import TrainConfig
    from vla_proxy import evaluate, vla_config

    run, out = Path(args.run), Path(args.out)
    base_tasks = tuple(t for t in MT10_TASKS if t != args.new_task)
    start = time.time()
    for name, tasks, episodes in (("data-base", base_tasks, args.base_episodes),
                                  ("data-new", (args.new_task,), args.demos)):
        if not (out / name / "dataset.json").is_file():
            write_metaworld(out / name, tasks=tasks, train_episodes=episodes, test_episodes=0, workers=args.workers,
                            seed=1, progress=False)
    data_minutes = (time.time() - start) / 60

    def measure(model: Path) -> dict:
        return {"new_task": evaluate(model, args.episodes, args.workers, tasks=(args.new_task,)),
                "base_tasks": evaluate(model, args.base_task_episodes, args.workers, tasks=base_tasks)}

    def train(folder: Path, config) -> float:
        """Minutes the training took (recorded, so a re-run of the script reports the first run's)."""
        if not (folder / "model").is_dir():
            start = time.time()
            run_training(config(), export=str(folder / "model"))
            (folder / "minutes.json").write_text(json.dumps((time.time() - start) / 60))
        return json.loads((folder / "minutes.json").read_text())

    rows = {}
    base = out / "base"
    minutes = train(base, lambda: vla_config(run, out / "data-base", base, args.base_steps, 0, []))
    rows["base (nine tasks)"] = {"minutes": minutes, **measure(base / "model")}
    print(json.dumps(rows), flush=True)
    new = {"dataset": str(out / "data-new"), "task": "vla", "weight": 1.0}
    replay = {"dataset": str(out / "data-base"), "task": "vla", "weight": 1.0}
    for name, folder, streams, lora in (("full fine-tune", "full", [new], 0),
                                        (f"LoRA rank {args.lora_rank}", "lora", [new], args.lora_rank),
                                        ("full fine-tune + replay of the nine", "replay", [new, replay], 0)):
        folder = out / folder
        path = finetune_config(folder, run, base / "model", streams, args.steps, args.lr * (4 if lora else 1), lora)
        minutes = train(folder, lambda: load_config(path, TrainConfig))
        rows[name] = {"minutes": minutes, **measure(folder / "model")}
        print(json.dumps({name: rows[name]}), flush=True)
    (out / "finetune.json").write_text(json.dumps({"args": vars(args), "data_minutes": data_minutes, "rows": rows},
                                                  indent=2))
    print(f"\nnew task {args.new_task}: {args.demos} demonstrations, {args.episodes} episodes; base tasks: "
          f"{args.base_task_episodes} episodes each; {args.steps} fine-tuning steps\n")
    print(markdown_table(["model", "new task success", "base tasks success (forgetting)", "train minutes"],
                         [[name, f"{r['new_task']['success']:.2f} ± {r['new_task']['standard_error']:.2f}",
                           f"{r['base_tasks']['success']:.2f} ± {r['base_tasks']['standard_error']:.2f}",
                           f"{r['minutes']:.1f}"] for name, r in rows.items()]))


if __name__ == "__main__":
    main()
