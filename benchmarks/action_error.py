"""Offline action error of robot policies on a dataset split: how well each fits (train split) and generalises (test
split) the expert's chunks, in real units, without a simulator.

    OMP_NUM_THREADS=1 python benchmarks/action_error.py --data runs/reach-s4 --split train \
        --unimask runs/proxy/reach-base/model --bc runs/bc/reach-400/policy

For a unimask bundle it prints the error of the chunk decoded in one step from the fully masked target as the most
likely bin of every code (`estimate="mode"`) and as the mean of its predicted bins (`"mean"`, the default of
`pipe.act`); for a behaviour-cloning policy (`unimask.training.bc`), the error of its regressed chunk. Error: mean
absolute difference from the expert's chunk over the valid steps (padding past an episode's end left out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_split(data: Path, split: str, limit: int) -> list[dict]:
    from unimask.training.data.loader import iterate_samples

    return [sample for _, sample in zip(range(limit), iterate_samples(data, split=split, task="vla"))]


def error(chunks: np.ndarray, samples: list[dict]) -> float:
    expert = np.stack([s["action"] for s in samples])
    valid = np.stack([np.arange(len(s["action"])) < s["meta"].get("valid_steps", len(s["action"])) for s in samples])
    return float(np.abs(chunks - expert)[valid].mean())


def unimask_errors(bundle: Path, samples: list[dict]) -> dict[str, float]:
    from unimask.pipeline import UnifiedPipeline

    pipe = UnifiedPipeline.from_pretrained(bundle)
    out = {}
    for estimate in ("mode", "mean"):
        chunks = []
        for start in range(0, len(samples), 50):
            batch = samples[start:start + 50]
            state = np.stack([s["state"] for s in batch]) if pipe.uses_state else None
            chunks.append(pipe.act([s["image"] for s in batch], [s["text"].paraphrases[0] for s in batch],
                                   state=state, estimate=estimate))
        out[f"unimask ({estimate})"] = error(np.concatenate(chunks), samples)
    return out


def bc_error(policy: Path, samples: list[dict]) -> float:
    from unimask.training.bc import BCPolicy

    bc = BCPolicy.from_pretrained(policy)
    return error(np.stack([bc.act(s["image"], s["state"], s["meta"]["task_name"]) for s in samples]), samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MT10 dataset folder")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--limit", type=int, default=400, help="samples of the split (in shard order)")
    parser.add_argument("--unimask", action="append", default=[], help="a unimask bundle (repeatable)")
    parser.add_argument("--bc", action="append", default=[], help="a behaviour-cloning policy folder (repeatable)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    samples = load_split(Path(args.data), args.split, args.limit)
    results = {}
    for bundle in args.unimask:
        results.update({f"{bundle} {k}": v for k, v in unimask_errors(Path(bundle), samples).items()})
    for policy in args.bc:
        results[f"{policy} (bc)"] = bc_error(Path(policy), samples)
    print(json.dumps({"data": args.data, "split": args.split, "samples": len(samples), "action_mae": results},
                     indent=2))


if __name__ == "__main__":
    main()
