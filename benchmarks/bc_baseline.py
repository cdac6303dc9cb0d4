"""The behaviour-cloning baseline on MT10 shards: train for a stated budget, evaluate in closed loop on the seeds every
unimask robot figure uses.

    OMP_NUM_THREADS=1 python benchmarks/bc_baseline.py --data runs/quickstart/data/mt10 --out runs/bc/q --minutes 5
    ... --steps 3000 --seed 1 --execute-steps 4

Writes OUT/policy (the `unimask.training.bc.BCPolicy` folder) and OUT/result.json: the budget spent (steps, training
seconds, sample-gradients), closed-loop success with its standard error, per task. Evaluation: `--episodes` per task
on `evaluate_policy`'s default seeds (disjoint from every dataset's), the actions of each chunk executed before
re-planning as `--execute-steps` says (default: as the unified model's evaluation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def run(data: Path, out: Path, minutes: float | None, steps: int | None, seed: int, episodes: int, workers: int,
        execute_steps: int | None, batch_size: int, lr: float) -> dict[str, Any]:
    from unimask.training.bc import BCPolicyFactory, train_bc
    from unimask.training.evaluation.robot import evaluate_policy
    from unimask.training.evaluation.suite import VLA_DECODING

    trained = train_bc(data, out / "policy", steps=steps, minutes=minutes, seed=seed, batch_size=batch_size, lr=lr)
    execute = execute_steps or VLA_DECODING["execute_steps"]
    result = evaluate_policy(BCPolicyFactory(out / "policy"), episodes=episodes, workers=workers,
                             execute_steps=execute, progress=False)
    summary = {"data": str(data), "seed": seed, "budget": {"minutes": minutes, "steps": steps}, **trained,
               "execute_steps": execute, "success": result["average_success"],
               "standard_error": result["standard_error"], "episodes": result["n"],
               "per_task": {task: v["success"] for task, v in result["per_task"].items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MT10 dataset folder (raw or pre-tokenized shards)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=None, help="training wall-clock budget")
    parser.add_argument("--steps", type=int, default=None, help="training step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop episodes per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--execute-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.minutes is None and args.steps is None:
        parser.error("give a budget: --minutes, --steps or both")
    print(json.dumps(run(Path(args.data), Path(args.out), args.minutes, args.steps, args.seed, args.episodes,
                         args.workers, args.execute_steps, args.batch_size, args.lr), indent=2))


if __name__ == "__main__":
    main()
