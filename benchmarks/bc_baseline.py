"""The behaviour-cloning baseline on MT10 shards: train for a stated budget, evaluate in closed loop on the seeds every
unimask robot figure uses.

    OMP_NUM_THREADS=1 python benchmarks/bc_baseline.py --run runs/quickstart          # beside a quickstart run
    OMP_NUM_THREADS=1 python benchmarks/bc_baseline.py --data runs/quickstart/data/mt10 --out runs/bc/q --minutes 5

With `--run`, the baseline is trained on that run's MT10 shards for as many minutes as the run's training stage took
(the unified model spent them on every task; the baseline spends them on MT10 alone), evaluated on as many episodes
per task as the run's evaluation, and one per-task table puts both side by side (`RUN/eval/bc_baseline.md` and
`.json`). Otherwise it writes OUT/policy (the `unimask.training.bc.BCPolicy` folder) and OUT/result.json: the budget
spent (steps, training seconds, sample-gradients), closed-loop success with its standard error, per task.
Evaluation: `--episodes` per task on `evaluate_policy`'s default seeds (disjoint from every dataset's), the actions
of each chunk executed before re-planning as `--execute-steps` says (default: as the unified model's evaluation).
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
    from unimask.training.data.format import read_card

    # The tasks the data holds (the policy's one-hot knows no other).
    result = evaluate_policy(BCPolicyFactory(out / "policy"), tasks=read_card(data)["task_names"], episodes=episodes,
                             workers=workers, execute_steps=execute, progress=False)
    summary = {"data": str(data), "seed": seed, "budget": {"minutes": minutes, "steps": steps}, **trained,
               "execute_steps": execute, "success": result["average_success"],
               "standard_error": result["standard_error"], "episodes": result["n"],
               "per_task": {task: v["success"] for task, v in result["per_task"].items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def beside_run(run_dir: Path, seed: int, workers: int, batch_size: int, lr: float) -> str:
    """Train and evaluate the baseline as the run's own budget and evaluation say; the side-by-side table."""
    report = json.loads((run_dir / "report.json").read_text())
    vla = report["results"]["vla"]
    minutes = report["timings"]["train"] / 60
    episodes = report["plan"]["eval_vla_episodes"]
    baseline = run(run_dir / "data" / "mt10", run_dir / "eval" / "bc_baseline", minutes, None, seed, episodes,
                   workers, vla["settings"]["execute_steps"], batch_size, lr)
    rows = [f"| MT10 (same shards, {minutes:.1f} training minutes, {episodes} episodes per task) | unimask | "
            "behaviour cloning |", "|---|---|---|",
            f"| average | {vla['average_success']:.3f} ± {vla['standard_error']:.3f} | "
            f"{baseline['success']:.3f} ± {baseline['standard_error']:.3f} |"]
    rows += [f"| {task} | {v['success']:.2f} | {baseline['per_task'][task]:.2f} |" for task, v in vla["per_task"].items()]
    table = "\n".join(rows) + "\n"
    (run_dir / "eval" / "bc_baseline.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="", help="a quickstart run: the baseline beside it, on its budget")
    parser.add_argument("--data", default="", help="MT10 dataset folder (raw or pre-tokenized shards)")
    parser.add_argument("--out", default="")
    parser.add_argument("--minutes", type=float, default=None, help="training wall-clock budget")
    parser.add_argument("--steps", type=int, default=None, help="training step budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop episodes per task")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--execute-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    if args.run:
        print(beside_run(Path(args.run), args.seed, args.workers, args.batch_size, args.lr))
        return
    if not args.data or not args.out or (args.minutes is None and args.steps is None):
        parser.error("give --run RUN, or --data, --out and a budget (--minutes, --steps or both)")
    print(json.dumps(run(Path(args.data), Path(args.out), args.minutes, args.steps, args.seed, args.episodes,
                         args.workers, args.execute_steps, args.batch_size, args.lr), indent=2))


if __name__ == "__main__":
    main()
