"""`unimask data ...`: build the built-in datasets, convert a user's data, pre-tokenize shards, inspect a dataset.

    unimask data digits    --out DIR   scikit-learn handwritten digits, captioned (t2i, i2t)
    unimask data shapes    --out DIR   procedural coloured-shape scenes with compositional captions (t2i, i2t)
    unimask data metaworld --out DIR   Meta-World MT10 expert demonstrations (vla)
    unimask data folder    --out DIR   (--images DIR --captions FILE) or (--episodes DIR): your own data
    unimask data lerobot   --root DIR --out DIR   a local LeRobotDataset (v3.0 or v2.1): camera, state, actions, tasks
    unimask data pretokenize --vq DIR --actions DIR --in DIR --out DIR   add img_codes.npy / act_codes.npy
    unimask data inspect   DIR         print the card and counts, write a PNG grid of samples
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from unimask.errors import ConfigError, check_number

from .format import MAX_IMAGE_SIZE, DataError

SOURCES = ("digits", "shapes", "metaworld", "folder", "lerobot")
MAX_COUNT = 10**7  # samples, scenes or episodes one command writes
SEEDS = ("seed", 0, 2**32 - 1)
SHARDS = ("shard_size", 1, 10**6)
FRACTION = ("test_fraction", 0.0, 1.0)  # open at both ends: both splits get something
# Per command: (option, low, high) for every numeric option, checked before any work starts. None (an option left
# out) passes; `image_size` 0 keeps the original size where the help says so.
BOUNDS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "digits": (SEEDS, SHARDS, FRACTION, ("image_size", 8, MAX_IMAGE_SIZE)),
    "shapes": (SEEDS, SHARDS, ("train", 1, MAX_COUNT), ("test", 1, MAX_COUNT), ("image_size", 32, MAX_IMAGE_SIZE),
               ("max_objects", 1, 3)),
    "metaworld": (SEEDS, SHARDS, ("train_episodes", 0, MAX_COUNT), ("test_episodes", 0, MAX_COUNT),
                  ("image_size", 8, MAX_IMAGE_SIZE), ("horizon", 1, 1024), ("max_steps", 1, 10**5),
                  ("workers", 0, 256), ("frame_stride", 1, 1000), ("foresight", 0, 10**5)),
    "folder": (SEEDS, SHARDS, FRACTION, ("image_size", 0, MAX_IMAGE_SIZE), ("horizon", 1, 1024)),
    "lerobot": (SEEDS, SHARDS, FRACTION, ("image_size", 0, MAX_IMAGE_SIZE), ("horizon", 1, 1024),
                ("episodes", 1, MAX_COUNT)),
    "pretokenize": (("action_length", 1, 2**16), ("batch_size", 1, 4096)),
    "inspect": (("samples", 1, 1024),),
}


def check_args(args: argparse.Namespace) -> None:
    """Refuse an option out of its range, naming it (`--image-size must be an integer in [8, 1024], got 100000`)."""
    for name, low, high in BOUNDS.get(args.data_command, ()):
        value = getattr(args, name)
        if value is not None:
            fraction = isinstance(low, float)
            check_number(f"--{name.replace('_', '-')}", value, low, high, open_low=fraction, open_high=fraction,
                         integer=not fraction, error=ConfigError)


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("data", help="build datasets as webdataset shards, pre-tokenize, inspect",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="data_command", metavar="SOURCE")
    parser.set_defaults(func=run)

    def common(p: argparse.ArgumentParser, shard_size: int) -> None:
        p.add_argument("--out", required=True, help="output dataset folder (train/, test/, dataset.json)")
        p.add_argument("--seed", type=int, default=0, help="seed of the split and of all sampling (default 0)")
        p.add_argument("--shard-size", type=int, default=shard_size, help=f"samples per shard (default {shard_size})")

    p = sub.add_parser("digits", help="scikit-learn's bundled handwritten digits, captioned")
    common(p, 200)
    p.add_argument("--image-size", type=int, default=64, help="output side in pixels (default 64)")
    p.add_argument("--resize", choices=("bilinear", "nearest"), default="bilinear",
                   help="upscaling of the 8x8 source (default bilinear)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction per class (default 0.2)")

    p = sub.add_parser("shapes", help="procedural scenes of coloured shapes with compositional captions")
    common(p, 1000)
    p.add_argument("--train", type=int, default=20000, help="train scenes (default 20000)")
    p.add_argument("--test", type=int, default=2000, help="test scenes (default 2000)")
    p.add_argument("--image-size", type=int, default=64, help="output side in pixels (default 64)")
    p.add_argument("--shapes", type=_csv, default=None, help="comma list (default circle,square,triangle)")
    p.add_argument("--colors", type=_csv, default=None, help="comma list (default red,green,blue,yellow)")
    p.add_argument("--max-objects", type=int, default=3, help="objects per scene, 1 to 3 (default 3)")
    p.add_argument("--holdout-combinations", type=_csv, default=[],
                   help='colour-shape pairs kept out of train, e.g. "red circle,blue square"')

    p = sub.add_parser("metaworld", help="Meta-World MT10 scripted-expert demonstrations, rendered offline")
    common(p, 2000)
    p.add_argument("--tasks", type=_csv, default=None, help="comma list of MT10 task names (default all ten)")
    p.add_argument("--train-episodes", type=int, default=100, help="successful episodes per task (default 100)")
    p.add_argument("--test-episodes", type=int, default=10, help="successful episodes per task (default 10)")
    p.add_argument("--image-size", type=int, default=64, help="frame side in pixels (default 64)")
    p.add_argument("--camera", default="front", help="front (default), front-oblique, or a Meta-World camera name")
    p.add_argument("--horizon", type=int, default=8, help="action chunk length H (default 8)")
    p.add_argument("--max-steps", type=int, default=200, help="episode cap (default 200)")
    p.add_argument("--frame-stride", type=int, default=1,
                   help="keep one step in N of each episode as a sample (rendering is most of the time: N times "
                        "the episodes for the same time; default 1)")
    p.add_argument("--foresight", type=int, default=0,
                   help="also store the frame K steps ahead (future.png) for foresight rows (default 0: none)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0 = one per CPU core)")

    p = sub.add_parser("folder", help="your own captioned images or robot episodes")
    common(p, 1000)
    p.add_argument("--images", help="image folder (with --captions)")
    p.add_argument("--captions", help="captions .csv (header: file,caption) or .jsonl ({file, caption} per line)")
    p.add_argument("--captions-encoding", default=None,
                   help="text encoding of the captions file (default: UTF-8, or UTF-16 when it has a byte-order mark)")
    p.add_argument("--episodes", help="folder of .npz/.hdf5 robot episodes (images, actions, [state], [instruction])")
    p.add_argument("--instruction", help="instruction for episodes whose file has none")
    p.add_argument("--image-size", type=int, default=64, help="images: centre-crop + resize side, 0 keeps (default 64)")
    p.add_argument("--horizon", type=int, default=8, help="episodes: action chunk length H (default 8)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out fraction (default 0.1)")

    p = sub.add_parser("lerobot", help="a local LeRobotDataset (v3.0, v2.1) as per-step robot samples (vla)")
    common(p, 2000)
    p.add_argument("--root", required=True, help="LeRobotDataset folder (meta/info.json, data/, videos/)")
    p.add_argument("--camera", default=None,
                   help="image/video feature to use (default: the first, e.g. observation.images.<name>)")
    p.add_argument("--state-key", default=None,
                   help="state feature (default observation.state when present; 'none' for no state)")
    p.add_argument("--action-key", default="action", help="action feature (default action)")
    p.add_argument("--image-size", type=int, default=64, help="centre-crop + resize side, 0 keeps (default 64)")
    p.add_argument("--horizon", type=int, default=8, help="action chunk length H (default 8)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out fraction of episodes (default 0.1)")
    p.add_argument("--episodes", type=int, default=None, help="convert only the first N episodes (default all)")

    p = sub.add_parser("pretokenize", help="add pre-tokenized codes (img_codes.npy, act_codes.npy, ...) to shards")
    p.add_argument("--vq", help="VQ image tokenizer folder (the image modality's tokenizer)")
    p.add_argument("--actions", help="action tokenizer folder (the action modality's tokenizer)")
    p.add_argument("--tokenizer", action="append", default=[], metavar="NAME=DIR",
                   help="the tokenizer folder of any registered modality (repeatable), e.g. image=runs/vq")
    p.add_argument("--in", dest="inp", required=True, help="input dataset folder (with dataset.json)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--action-length", type=int, default=None,
                   help="codes per action chunk; required for FAST tokenizers (variable length)")
    p.add_argument("--batch-size", type=int, default=64, help="images per VQ encoder call (default 64)")
    p.add_argument("--device", default="cpu", help="torch device for the VQ encoder (default cpu)")

    p = sub.add_parser("inspect", help="print a dataset's card and counts; write a PNG grid of samples")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--split", default="train", help="split to sample from (default train)")
    p.add_argument("--samples", type=int, default=16, help="samples in the grid (default 16)")
    p.add_argument("--png", default=None, help="grid path (default DIR/inspect-<split>.png)")
    p.add_argument("--no-count", action="store_true", help="skip reading every sample to count tasks")


def command_line(args: argparse.Namespace) -> str:
    """The full command (defaults included) that reproduces this run, for the dataset card."""
    parts = ["unimask", "data", args.data_command]
    for key, value in sorted(vars(args).items()):
        if key in ("func", "command", "data_command") or value is None or value is False or value == []:
            continue
        flag = "--" + ("in" if key == "inp" else key.replace("_", "-"))
        if value is True:
            parts.append(flag)
        else:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "data_command", None):
        print("usage: unimask data {digits,shapes,metaworld,folder,lerobot,pretokenize,inspect} ... (see --help)",
              file=sys.stderr)
        return 2
    check_args(args)
    return _dispatch(args)


def _summary(card: dict[str, Any], out: str) -> None:
    counts = ", ".join(f"{split} {info['count']} samples / {len(info['shards'])} shards"
                       for split, info in card["splits"].items())
    print(f"wrote {out}: {counts}; {card['bytes'] / 1e6:.1f} MB in {card['seconds']:.1f} s")
    stats = card.get("stats") or {}
    lost = {key: value for key, value in stats.items() if key.startswith("skipped") and isinstance(value, int) and value}
    if lost:
        first = stats.get("skipped_files", [])[:3]
        print(f"skipped (not written): {lost}{'; first: ' + str(first) if first else ''} - see dataset.json stats")


def _dispatch(args: argparse.Namespace) -> int:
    command = args.data_command
    if command == "digits":
        from .writers.digits import write_digits

        card = write_digits(args.out, image_size=args.image_size, resize=args.resize, test_fraction=args.test_fraction,
                            seed=args.seed, shard_size=args.shard_size, command=command_line(args))
    elif command == "shapes":
        from .writers.shapes import DEFAULT_COLORS, DEFAULT_SHAPES, write_shapes

        card = write_shapes(args.out, train=args.train, test=args.test, image_size=args.image_size,
                            shapes=args.shapes or DEFAULT_SHAPES, colors=args.colors or DEFAULT_COLORS,
                            max_objects=args.max_objects, holdout_combinations=args.holdout_combinations,
                            seed=args.seed, shard_size=args.shard_size, command=command_line(args))
    elif command == "metaworld":
        from .writers.metaworld import MT10_TASKS, write_metaworld

        card = write_metaworld(args.out, tasks=args.tasks or MT10_TASKS, train_episodes=args.train_episodes,
                               test_episodes=args.test_episodes, image_size=args.image_size, camera=args.camera,
                               horizon=args.horizon, max_steps=args.max_steps, frame_stride=args.frame_stride,
                               foresight=args.foresight, workers=args.workers, seed=args.seed,
                               shard_size=args.shard_size, command=command_line(args))
        rejected = sum(sum(v.values()) for v in card["stats"]["rejected"].values())
        print(f"expert episodes rejected (no success within {args.max_steps} steps): {rejected}")
    elif command == "folder":
        from .writers.folder import write_episode_folder, write_image_folder

        if bool(args.episodes) == bool(args.images or args.captions):
            raise DataError("give either --images DIR --captions FILE, or --episodes DIR (not both, not neither).")
        if args.episodes:
            card = write_episode_folder(args.out, args.episodes, instruction=args.instruction, horizon=args.horizon,
                                        test_fraction=args.test_fraction, seed=args.seed,
                                        shard_size=args.shard_size, command=command_line(args))
        else:
            if not (args.images and args.captions):
                raise DataError("images need both --images DIR and --captions FILE.")
            card = write_image_folder(args.out, args.images, args.captions, image_size=args.image_size,
                                      test_fraction=args.test_fraction, seed=args.seed, shard_size=args.shard_size,
                                      captions_encoding=args.captions_encoding, command=command_line(args))
    elif command == "lerobot":
        from .writers.lerobot import write_lerobot

        card = write_lerobot(args.out, args.root, camera=args.camera, state_key=args.state_key,
                             action_key=args.action_key, image_size=args.image_size, horizon=args.horizon,
                             test_fraction=args.test_fraction, seed=args.seed, shard_size=args.shard_size,
                             max_episodes=args.episodes, command=command_line(args))
        print(f"episodes skipped (undecodable {card['camera']}): {card['stats']['skipped_episodes']}")
    elif command == "pretokenize":
        from .pretokenize import pretokenize_dataset

        folders = {"image": args.vq, "action": args.actions}
        for item in args.tokenizer:
            name, _, folder = item.partition("=")
            if not folder:
                raise DataError(f"--tokenizer {item!r} must look like NAME=DIR, e.g. image=runs/vq.")
            folders[name] = folder
        card = pretokenize_dataset(args.inp, args.out, {k: v for k, v in folders.items() if v},
                                   action_length=args.action_length, batch_size=args.batch_size, device=args.device,
                                   command=command_line(args))
    elif command == "inspect":
        from .inspect import inspect_dataset

        inspect_dataset(args.dir, split=args.split, samples=args.samples, png=args.png, count=not args.no_count)
        return 0
    else:  # argparse restricts the choices; this is only reached if a new source is half-registered
        raise DataError(f"unknown data command {command!r}.")
    _summary(card, args.out)
    return 0
