"""`unimask eval CHECKPOINT --task caption|t2i|shapes|vla|all --data DIR` and `unimask eval train-judge`.

`--data` is the folder holding the dataset folders written by `unimask data` (`digits/`, `shapes/`; the quickstart's
`runs/quickstart/data`). Results go to `<out>/results.json` and `<out>/results.md`, plus sample pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import suite


def train_digit_judge(data_dir: str | Path, out: str | Path, epochs: int = 8) -> float:
    """Train the t2i judge on the real digits train split; raises unless it reaches 97% on the real test split."""
    from .judge import JudgeConfig, train_judge

    train = list(suite.iter_test_samples(data_dir, split="train"))
    test = list(suite.iter_test_samples(data_dir, split="test"))
    config = JudgeConfig(image_size=32, epochs=epochs)
    judge, accuracy = train_judge(np.stack([s["image"] for s in train]), np.array([s["meta"]["label"] for s in train]),
                                  np.stack([s["image"] for s in test]), np.array([s["meta"]["label"] for s in test]),
                                  config)
    judge.save(out)
    (Path(out) / "accuracy.json").write_text(json.dumps({"real_test_accuracy": accuracy}))
    return accuracy


def _save_grid(images: np.ndarray, path: Path, columns: int = 10) -> None:
    from PIL import Image

    rows = -(-len(images) // columns)
    h, w = images.shape[1:3]
    canvas = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, out: str | Path,
                        tasks: Sequence[str] = suite.TASKS, caption_limit: int = 200, t2i_per_class: int = 10,
                        shapes_limit: int = 100, vla_episodes: int = 5, vla_seeds: list[int] | None = None,
                        judge_dir: str | Path | None = None, judge_epochs: int = 8) -> dict[str, Any]:
    """Run the chosen tasks on a checkpoint; writes results.json / results.md / pictures into `out`."""
    from unimask.pipeline import UnifiedPipeline

    from .judge import ImageJudge

    data, out = Path(data), Path(out)
    pipe = UnifiedPipeline.from_pretrained(checkpoint)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    if "caption" in tasks:
        start = time.time()
        results["caption"] = suite.evaluate_captions(pipe, data / "digits", limit=caption_limit)
        if (data / "shapes").is_dir():
            results["caption_shapes"] = suite.evaluate_captions(pipe, data / "shapes", limit=caption_limit)
        timings["caption"] = time.time() - start
    if "t2i" in tasks:
        start = time.time()
        judge_dir = Path(judge_dir or out / "judge")
        if not (judge_dir / "judge.safetensors").is_file():
            train_digit_judge(data / "digits", judge_dir, epochs=judge_epochs)
        result = suite.evaluate_digits_t2i(pipe, data / "digits", ImageJudge.load(judge_dir),
                                           per_class=t2i_per_class)
        _save_grid(result.pop("images"), out / "t2i_digits.png")
        result["judge_real_test_accuracy"] = json.loads((judge_dir / "accuracy.json").read_text())["real_test_accuracy"]
        results["t2i"] = result
        timings["t2i"] = time.time() - start
    if "shapes" in tasks:
        start = time.time()
        result = suite.evaluate_shapes_t2i(pipe, data / "shapes", limit=shapes_limit)
        _save_grid(result.pop("images")[:40], out / "t2i_shapes.png")
        results["shapes"] = result
        timings["shapes"] = time.time() - start
    if "vla" in tasks:
        start = time.time()
        results["vla"] = suite.evaluate_vla(pipe, episodes=vla_episodes, seeds=vla_seeds)
        timings["vla"] = time.time() - start
    results["seconds"] = timings
    suite.save_results(results, out)
    return json.loads((out / "results.json").read_text())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (or: eval train-judge --data DIR --out DIR)")
    parser.add_argument("target", help="checkpoint folder, or 'train-judge'")
    parser.add_argument("--task", default="all", help="caption, t2i, shapes, vla or all (comma-separated)")
    parser.add_argument("--data", default="runs/quickstart/data", help="folder holding digits/ and shapes/")
    parser.add_argument("--out", default="", help="results folder (default: CHECKPOINT/../eval)")
    parser.add_argument("--judge", default="", help="judge folder (trained on real digits when missing)")
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per MT10 task")
    parser.add_argument("--seeds", default="", help="comma-separated episode offsets (default: held-out eval seeds)")
    parser.add_argument("--limit", type=int, default=200, help="held-out samples for caption / shapes")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.target == "train-judge":
        out = args.out or "runs/judge"
        accuracy = train_digit_judge(Path(args.data) / "digits", out)
        print(f"judge: {accuracy:.4f} on real held-out digits; saved to {out}")
        return 0
    if args.target == "train-clip":
        raise NotImplementedError("`unimask eval train-clip` (CLIP score with open_clip) is not implemented yet.")
    tasks = suite.TASKS if args.task == "all" else tuple(t.strip() for t in args.task.split(","))
    unknown = [t for t in tasks if t not in suite.TASKS]
    if unknown:
        print(f"unimask eval: unknown --task {unknown}; choose from {suite.TASKS} or all.", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.target).parent / "eval")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    results = evaluate_checkpoint(args.target, args.data, out, tasks=tasks, caption_limit=args.limit,
                                  shapes_limit=args.limit, vla_episodes=args.episodes, vla_seeds=seeds,
                                  judge_dir=args.judge or None)
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'}")
    return 0 if results else 1
