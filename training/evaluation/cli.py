"""`unimask eval CHECKPOINT --task caption|t2i|shapes|vla|clip|all --data DIR`, `unimask eval train-judge` and
`unimask eval train-clip`.

`--data` is the folder holding the dataset folders written by `unimask data` (`digits/`, `shapes/`; the quickstart's
`runs/quickstart/data`). Results go to `<out>/results.json` and `<out>/results.md`, plus sample pictures.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unimask.atomic import atomic_write_text
from unimask.errors import ConfigError, MissingFileError, check_choice, check_number
from unimask.training.launch import available_cores

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


def train_dataset_clip(data_dir: str | Path, out: str | Path, epochs: int = 16,
                       max_pairs_per_dataset: int = 4000) -> dict[str, Any]:
    """Train a small CLIP on the real train pairs of `data_dir/digits` (and `shapes` when present), check it
    zero-shot on the real held-out digits, and record its reference scores on held-out pairs in `clip_check.json`.

    Digits pairs are seen twice per epoch and each dataset gives at most `max_pairs_per_dataset` pairs, so the few
    digits (which carry the zero-shot check) are not drowned by shapes scenes."""
    from unimask.training.data.writers.digits import digit_captions

    from .clip import CLIP_CHECK, ClipTrainConfig, reference_scores, train_clip

    data_dir = Path(data_dir)
    names = [n for n in ("digits", "shapes") if (data_dir / n).is_dir()]
    if "digits" not in names:
        raise MissingFileError(f"{data_dir} has no digits/ dataset; write one with `unimask data digits`.")
    pairs = [(s["image"], s["text"].paraphrases) for name in names
             for s in suite.iter_test_samples(data_dir / name, max_pairs_per_dataset, split="train")
             for _ in range(2 if name == "digits" else 1)]
    test = list(suite.iter_test_samples(data_dir / "digits"))
    scorer, accuracy = train_clip(pairs, [s["image"] for s in test], [s["meta"]["label"] for s in test],
                                  [digit_captions(k) for k in range(10)], out, ClipTrainConfig(epochs=epochs))
    check: dict[str, Any] = {"train_pairs_per_epoch": len(pairs), "datasets": names,
                             "digits_zero_shot_accuracy": accuracy}
    for name in names:
        held_out = list(suite.iter_test_samples(data_dir / name, limit=200))
        references = reference_scores(scorer.embed_images([s["image"] for s in held_out]),
                                      scorer.embed_texts([s["text"].stored for s in held_out]))
        check.update({f"{name}_{key}": value for key, value in references.items()})
    atomic_write_text(Path(out) / CLIP_CHECK, json.dumps(check, indent=2))
    return check


def _save_grid(result: dict[str, Any], path: Path, limit: int | None = None, columns: int = 10) -> None:
    """The generated images of a text-to-image result, each under its prompt (the images leave the result: the
    prompts stay in results.json)."""
    from unimask.training.plots import captioned_grid

    images, prompts = result.pop("images")[:limit], result["prompts"][:limit]
    path.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid(list(images), prompts, columns=columns, cell=96).save(path)


class _Background:
    """`work()` on a thread (it waits on worker processes) while the caller goes on; `result()` joins it."""

    def __init__(self, work: Any):
        self.value: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0

        def run() -> None:
            start = time.time()
            try:
                self.value = work()
            except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread by result()
                self.error = err
            self.seconds = time.time() - start

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, out: str | Path,
                        tasks: Sequence[str] = suite.TASKS, caption_limit: int = 200, t2i_per_class: int = 10,
                        shapes_limit: int = 100, vla_episodes: int = 5, vla_seeds: list[int] | None = None,
                        vla_workers: int = 1, vla_decoding: dict[str, Any] | None = None,
                        judge_dir: str | Path | None = None, judge_epochs: int = 8, clip_limit: int = 100,
                        clip: str | Path | None = None, clip_weights: str | Path | None = None) -> dict[str, Any]:
    """Run the chosen tasks on a checkpoint; writes results.json / results.md / pictures into `out`.

    `clip`: an open_clip local-dir folder or architecture name (with `clip_weights`, a local file); by default a
    small CLIP is trained on the dataset's own pairs into `out/clip` when none is there."""
    from unimask.pipeline import UnifiedPipeline

    import torch

    from .judge import ImageJudge

    data, out = Path(data), Path(out)
    # Captions and images are decoded in large batches: on a GPU where there is one. Rollouts run in CPU workers.
    pipe = UnifiedPipeline.from_pretrained(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
    decoding = {**suite.VLA_DECODING, **(vla_decoding or {})}
    if (vla_decoding or {}).get("delay") and "execute_steps" not in vla_decoding:
        decoding.pop("execute_steps")  # with a delay, execute what the delay leaves of each chunk
    if "vla" in tasks:  # refused here, before any task runs, rather than inside the rollouts
        from .robot import executed_per_chunk

        executed_per_chunk(pipe.processor.settings.action_horizon, decoding.get("execute_steps"),
                           decoding.get("delay", 0))
        check_number("--action-steps", decoding["steps"], 1, pipe.processor.length("action"), integer=True,
                     fix="at most one step per action code", error=ConfigError)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    rollouts, threads = None, torch.get_num_threads()
    if "vla" in tasks and vla_workers > 1:
        # Rollouts run in worker processes while this process decodes captions and images on one thread: every core
        # has one job, and no multi-threaded job waits on a core another one holds (which can multiply its time).
        rollouts = _Background(lambda: suite.evaluate_vla(checkpoint, episodes=vla_episodes, seeds=vla_seeds,
                                                          workers=vla_workers - 1, **decoding))
        if pipe.device.type == "cpu":
            torch.set_num_threads(1)
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
        _save_grid(result, out / "t2i_digits.png")
        result["judge_real_test_accuracy"] = json.loads((judge_dir / "accuracy.json").read_text())["real_test_accuracy"]
        results["t2i"] = result
        timings["t2i"] = time.time() - start
    if "shapes" in tasks:
        start = time.time()
        result = suite.evaluate_shapes_t2i(pipe, data / "shapes", limit=shapes_limit)
        _save_grid(result, out / "t2i_shapes.png", limit=40, columns=8)
        results["shapes"] = result
        timings["shapes"] = time.time() - start
    if "vla" in tasks:
        start = time.time()
        results["vla"] = rollouts.result() if rollouts else suite.evaluate_vla(pipe, episodes=vla_episodes,
                                                                               seeds=vla_seeds, **decoding)
        torch.set_num_threads(threads)  # the rollouts' cores are free again
        results["vla"]["decoding"] = decoding
        timings["vla"] = rollouts.seconds if rollouts else time.time() - start
    if "clip" in tasks:
        from .clip import CLIP_CONFIG, ClipScorer

        start = time.time()
        if clip is None:
            clip = out / "clip"
            if not (clip / CLIP_CONFIG).is_file():
                train_dataset_clip(data, clip)
        scorer = ClipScorer.load(clip, clip_weights)
        results["clip"] = suite.evaluate_clip(pipe, data / "digits", scorer, limit=clip_limit)
        if (data / "shapes").is_dir():
            results["clip_shapes"] = suite.evaluate_clip(pipe, data / "shapes", scorer, limit=clip_limit)
        timings["clip"] = time.time() - start
    results["seconds"] = timings
    suite.save_results(results, out)
    return json.loads((out / "results.json").read_text())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (or: eval train-judge|train-clip --data DIR "
                                                "--out DIR)")
    parser.add_argument("target", help="checkpoint folder, 'train-judge' or 'train-clip'")
    parser.add_argument("--task", default="all", help="caption, t2i, shapes, vla, clip or all (comma-separated)")
    parser.add_argument("--data", default="runs/quickstart/data", help="folder holding digits/ and shapes/")
    parser.add_argument("--out", default="", help="results folder (default: CHECKPOINT/../eval)")
    parser.add_argument("--judge", default="", help="judge folder (trained on real digits when missing)")
    parser.add_argument("--episodes", type=int, default=5, help="closed-loop episodes per MT10 task")
    parser.add_argument("--workers", type=int, default=0, help="processes for MT10 rollouts (default: one per core)")
    parser.add_argument("--execute-steps", type=int, default=0,
                        help=f"actions executed per chunk before re-planning (default {suite.VLA_DECODING['execute_steps']})")
    parser.add_argument("--action-steps", type=int, default=0,
                        help=f"decoding steps per action chunk (default {suite.VLA_DECODING['steps']})")
    parser.add_argument("--foresight-steps", type=int, default=0,
                        help="a foresight checkpoint first imagines the frame ahead in this many steps (default 0: "
                             "the actions are decoded with the frame masked)")
    parser.add_argument("--estimate", choices=("mean", "mode"), default=None,
                        help=f"each action as the mean of its predicted bins or the most likely bin (default "
                             f"{suite.VLA_DECODING['estimate']})")
    parser.add_argument("--delay", type=int, default=0, help="simulated inference delay in control steps: the robot "
                                                             "keeps executing the old chunk meanwhile (default 0)")
    parser.add_argument("--inpaint", action="store_true", help="with --delay: freeze the actions executed during the "
                                                               "delay as the new chunk's start (real-time chunking)")
    parser.add_argument("--seeds", default="", help="comma-separated episode offsets (default: held-out eval seeds)")
    parser.add_argument("--limit", type=int, default=200, help="held-out samples for caption / shapes (clip: at "
                                                                "most 100 per dataset)")
    parser.add_argument("--clip", default="", help="open_clip local-dir folder or architecture name (default: "
                                                   "a small CLIP trained on --data into OUT/clip)")
    parser.add_argument("--clip-weights", default="", help="local checkpoint file for an architecture name")
    parser.add_argument("--epochs", type=int, default=0, help="train-judge / train-clip epochs (default: 8 / 16)")
    parser.set_defaults(func=_run)


# (option, low, high) of every numeric option, checked before anything is loaded; 0 means "the default" where the
# help says so.
BOUNDS = (("episodes", 1, 1000), ("workers", 0, 256), ("execute_steps", 0, 1024), ("action_steps", 0, 1024),
          ("foresight_steps", 0, 1024), ("delay", 0, 1024), ("limit", 1, 100_000), ("epochs", 0, 1000))


def check_args(args: argparse.Namespace) -> tuple[tuple[str, ...], list[int] | None]:
    """The tasks and episode seeds the options ask for; an option out of its range is refused naming it."""
    for name, low, high in BOUNDS:
        check_number(f"--{name.replace('_', '-')}", getattr(args, name), low, high, integer=True, error=ConfigError)
    tasks = suite.TASKS if args.task == "all" else tuple(t.strip() for t in args.task.split(","))
    for task in tasks:
        check_choice("--task", task, (*suite.TASKS, "all"), fix="several are comma-separated", error=ConfigError)
    if args.inpaint and not args.delay:
        raise ConfigError("`--inpaint` freezes the actions executed during the inference delay; give --delay >= 1.",
                          key="--inpaint")
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise ConfigError(f"`--seeds` must be comma-separated whole numbers, got {args.seeds!r}.", key="--seeds") \
            from None
    for seed in seeds or ():
        check_number("--seeds", seed, 0, 10**4 - 1, integer=True, fix="they are episode offsets within a task",
                     error=ConfigError)
    return tasks, seeds


def _run(args: argparse.Namespace) -> int:
    tasks, seeds = check_args(args)
    if args.target == "train-judge":
        out = args.out or "runs/judge"
        accuracy = train_digit_judge(Path(args.data) / "digits", out, epochs=args.epochs or 8)
        print(f"judge: {accuracy:.4f} on real held-out digits; saved to {out}")
        return 0
    if args.target == "train-clip":
        out = args.out or "runs/clip"
        check = train_dataset_clip(args.data, out, epochs=args.epochs or 16)
        print(json.dumps(check, indent=2))
        print(f"CLIP saved to {out} (open_clip local-dir layout)")
        return 0
    out = Path(args.out or Path(args.target).parent / "eval")
    results = evaluate_checkpoint(args.target, args.data, out, tasks=tasks, caption_limit=args.limit,
                                  shapes_limit=args.limit, vla_episodes=args.episodes, vla_seeds=seeds,
                                  vla_workers=args.workers or available_cores(),
                                  vla_decoding={k: v for k, v in (
                                      ("execute_steps", args.execute_steps), ("steps", args.action_steps),
                                      ("delay", args.delay), ("inpaint", args.inpaint), ("estimate", args.estimate),
                                      ("foresight_steps", args.foresight_steps)) if v},
                                  judge_dir=args.judge or None, clip_limit=min(args.limit, 100),
                                  clip=args.clip or None, clip_weights=args.clip_weights or None)
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'}")
    return 0 if results else 1
