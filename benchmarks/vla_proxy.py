"""The robot-policy proxy: a VLA-only model trained with a quickstart run's recipe (its train.yaml: architecture,
tokenizers, pixel encoder, masking) on MT10 shards, then evaluated in closed loop. A few minutes instead of a whole
quickstart, so a change to the robot recipe can be measured on its own and on more than one seed.

    OMP_NUM_THREADS=1 python benchmarks/vla_proxy.py --run runs/quickstart --out runs/proxy/base --steps 600
    ... --set masking.full_mask.vla=0.8 --seed 1        # one change, another seed
    ... --data runs/mt10-h16 --set sequence.action_horizon=16   # other MT10 shards (raw or pre-tokenized)

Writes OUT/model (the bundle), OUT/train (the run) and OUT/result.json (success with its standard error, per task,
training seconds, median latency per chunk).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml


def vla_config(run: Path, data: Path, out: Path, steps: int, seed: int, overrides: list[str]) -> Any:
    """The run's train config restricted to the vla stream on `data`, with `overrides` (dotted key=value)."""
    from unimask.config import load_config
    from unimask.training.train_config import TrainConfig

    config = yaml.safe_load((run / "train.yaml").read_text())
    config["data"]["streams"] = [{"dataset": str(data), "task": "vla", "weight": 1.0}]
    config["data"]["seed"] = seed
    config["optim"]["warmup"] = max(20, steps // 20)
    config["train"].update({"out": str(out / "train"), "steps": steps, "seed": seed, "checkpoint_every": steps,
                            "log_every": 20})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path, TrainConfig, overrides)


def evaluate(model: Path, episodes: int, workers: int, tasks: tuple[str, ...] | None = None,
             **decoding: Any) -> dict[str, Any]:
    from unimask.training.evaluation.suite import VLA_DECODING, evaluate_vla

    result = evaluate_vla(str(model), episodes=episodes, workers=workers, tasks=tasks,
                          **{**VLA_DECODING, **decoding})
    return {"success": result["average_success"], "standard_error": result["standard_error"], "episodes": result["n"],
            "median_latency_ms": 1000 * result["median_latency_per_chunk_s"],
            "boundary_jump": result["boundary_jump"], "action_change": result["action_change"],
            "per_task": {task: v["success"] for task, v in result["per_task"].items()}}


def train_and_evaluate(run: Path, data: Path, out: Path, steps: int, seed: int, overrides: list[str],
                       episodes: int, workers: int) -> dict[str, Any]:
    from unimask.training.data.format import read_card
    from unimask.training.launch import run_training

    start = time.time()
    run_training(vla_config(run, data, out, steps, seed, overrides), export=str(out / "model"))
    seconds = time.time() - start
    # The tasks the data holds (a one-task proxy evaluates that task only).
    tasks = tuple(read_card(data).get("task_names") or ()) or None
    result = {"steps": steps, "seed": seed, "overrides": overrides, "data": str(data), "train_seconds": seconds,
              **evaluate(out / "model", episodes, workers, tasks)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="quickstart run whose train.yaml is the recipe")
    parser.add_argument("--data", default="", help="MT10 shards (default: RUN/data/mt10-tok)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="dotted key=value override")
    args = parser.parse_args()
    run = Path(args.run)
    result = train_and_evaluate(run, Path(args.data or run / "data" / "mt10-tok"), Path(args.out), args.steps,
                                args.seed, args.overrides, args.episodes, args.workers)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
