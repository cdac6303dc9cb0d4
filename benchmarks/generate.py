"""Generation speed and quality of a trained checkpoint, all settings measured in one run.

    python benchmarks/generate.py --checkpoint runs/quickstart/model --data runs/quickstart/data

For captions (digits test split), images (digit prompts) and action chunks (MT10 test split) it reports forward
passes (NFE), wall time and quality for:
  (a) one token per step, (b) the default schedule, (c) + confidence-threshold commits (text), (d) + prefix cache.
(a)-(c) run without the prefix cache so each row adds exactly one thing. Quality: caption digit accuracy, judge-free
image check (fraction of codes changed vs (d) is not a quality metric, so images report time only), and the mean
absolute action error against the expert's chunk in real units.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.evaluation.captions import digit_caption_accuracy

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model")
    parser.add_argument("--data", default="runs/quickstart/data")
    parser.add_argument("--n", type=int, default=64, help="samples per task")
    parser.add_argument("--threshold", type=float, default=0.9, help="confidence threshold for setting (c)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    data = Path(args.data)
    digits = [s for _, s in zip(range(args.n), iterate_samples(data / "digits", split="test", task="i2t"))]
    robot = [s for _, s in zip(range(args.n), iterate_samples(data / "mt10", split="test", task="vla"))]
    images, labels = [s["image"] for s in digits], [s["meta"]["label"] for s in digits]
    length = pipe.processor.length("text")
    rows = []

    def caption_row(name, **kw):
        out, seconds = _timed(lambda: pipe.caption(images, return_trajectory=True, **kw))
        accuracy = digit_caption_accuracy(out.outputs, labels)
        tokens = sum(len(ids) + 1 for ids in pipe.processor.encode("text", [c or "." for c in out.outputs]))
        rows.append({"task": "caption", "setting": name, "nfe": out.forward_passes, "seconds": seconds,
                     "tokens_per_s": tokens / seconds, "digit_accuracy": accuracy})

    caption_row("(a) one token per step", steps=length, block_length=length, use_cache=False)
    caption_row("(b) default: 8 blocks of 3, 8 steps", steps=8, block_length=3, use_cache=False)
    caption_row("(c) + threshold", steps=length, block_length=3, threshold=args.threshold, use_cache=False)
    caption_row("(d) + prefix cache", steps=length, block_length=3, threshold=args.threshold, use_cache=True)

    prompts = [f"the digit {w}" for w in ("zero", "one", "two", "three", "four", "five", "six", "seven")]
    n_image = pipe.processor.length("image")
    for name, kw in (("(a) one token per step", dict(steps=n_image, use_cache=False)),
                     ("(b) default: 12 steps", dict(steps=12, use_cache=False)),
                     ("(d) + prefix cache", dict(steps=12, use_cache=True))):
        out, seconds = _timed(lambda: pipe.text_to_image(prompts, seed=0, return_trajectory=True, **kw))
        rows.append({"task": "t2i", "setting": name, "nfe": out.forward_passes, "seconds": seconds})

    frames = [s["image"] for s in robot]
    instructions = [s["text"].stored for s in robot]
    state = np.stack([s["state"] for s in robot]) if pipe.uses_state else None
    expert = np.stack([s["action"] for s in robot])
    n_action = pipe.processor.length("action")
    for name, kw in (("(a) one token per step", dict(steps=n_action, use_cache=False)),
                     ("(b) default: 2 steps", dict(steps=2, use_cache=False)),
                     ("(d) + prefix cache", dict(steps=2, use_cache=True))):
        out, seconds = _timed(lambda: pipe.act(frames, instructions, state=state, return_trajectory=True, **kw))
        rows.append({"task": "act", "setting": name, "nfe": out.forward_passes, "seconds": seconds,
                     "action_mae": float(np.abs(out.outputs - expert).mean())})

    print("| task | setting | NFE | seconds | speed-up vs (a) | quality |")
    print("|---|---|---|---|---|---|")
    base = {}
    for row in rows:
        base.setdefault(row["task"], row["seconds"])
        quality = (f"digit acc {row['digit_accuracy']:.3f}" if "digit_accuracy" in row else
                   f"action MAE {row['action_mae']:.4f}" if "action_mae" in row else "-")
        print(f"| {row['task']} | {row['setting']} | {row['nfe']} | {row['seconds']:.2f} | "
              f"{base[row['task']] / row['seconds']:.1f}x | {quality} |")
    Path("runs").mkdir(exist_ok=True)
    Path("runs/bench_generate.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
