"""How to decode and execute action chunks: action error and closed-loop success against decoding steps, re-masking
and the number of actions executed before re-planning, for one checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/vla_decoding.py --checkpoint runs/quickstart/model --data runs/quickstart/data

Action error: mean absolute error (real units) of the decoded chunk against the expert's on held-out MT10 frames.
Success: closed-loop MT10 (`--episodes` per task, the evaluation's held-out seeds, `--workers` processes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tables import markdown_table  # benchmarks/tables.py, beside this script

SETTINGS = [  # (decoding steps, remask threshold, executed actions)
    (1, None, 8), (2, None, 8), (4, None, 8), (8, None, 8), (4, 0.5, 8), (2, None, 4), (4, None, 4), (2, None, 2),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model")
    parser.add_argument("--data", default="runs/quickstart/data")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--frames", type=int, default=400, help="held-out frames for the action error")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="", help="json results (default: CHECKPOINT/../vla_decoding.json)")
    args = parser.parse_args()

    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.evaluation.suite import evaluate_vla

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    samples = [s for _, s in zip(range(args.frames), iterate_samples(Path(args.data) / "mt10", "test", "vla"))]
    images, texts = [s["image"] for s in samples], [s["text"].stored for s in samples]
    state = np.stack([s["state"] for s in samples]) if pipe.uses_state else None
    expert = np.stack([s["action"] for s in samples])
    valid = np.stack([np.arange(len(s["action"])) < s["meta"].get("valid_steps", len(s["action"])) for s in samples])
    rows = []
    for steps, remask, execute in SETTINGS:
        options = {"steps": steps, **({"remask_threshold": remask} if remask else {})}
        decoded = np.concatenate([pipe.act(images[i:i + 50], texts[i:i + 50],
                                           state=None if state is None else state[i:i + 50], **options)
                                  for i in range(0, len(images), 50)])
        error = float(np.abs(decoded - expert)[valid].mean())
        result = evaluate_vla(args.checkpoint, episodes=args.episodes, workers=args.workers, execute_steps=execute,
                              **options)
        rows.append({"steps": steps, "remask_threshold": remask, "execute_steps": execute, "action_mae": error,
                     "success": result["average_success"], "standard_error": result["standard_error"],
                     "episodes": result["n"], "median_latency_ms": 1000 * result["median_latency_per_chunk_s"]})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out or Path(args.checkpoint).parent / "vla_decoding.json")
    out.write_text(json.dumps(rows, indent=2))
    print(markdown_table(["decoding steps", "re-mask below", "actions executed", "action MAE", "success (episodes)",
                          "median ms / chunk"],
                         [[r["steps"], r["remask_threshold"] or "-", r["execute_steps"], f"{r['action_mae']:.4f}",
                           f"{r['success']:.3f} ± {r['standard_error']:.3f} ({r['episodes']})",
                           f"{r['median_latency_ms']:.1f}"] for r in rows]))


if __name__ == "__main__":
    main()
