"""`unimask fit-actions`: fit an action tokenizer (bins or FAST) on episodes and print its round-trip summary.

`--data` is an .npz (an array `actions` [N, T, D], optionally `lengths` [N], or one [T, D] array per key) or a
dataset of webdataset shards (a folder, glob or brace pattern); every sample's `actions.npy` [T, D] is one episode.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from unimask.atomic import atomic_write_text
from unimask.tokenizers.action import (NORM_MODES, PAD_MODES, ActionClippingWarning, ActionTokenizerError,
                                       BinActionTokenizer, FASTActionTokenizer, chunk_episodes)
from unimask.modality import decode_npy
from unimask.training.data.format import read_raw, resolve_shards

KINDS = {"bins": BinActionTokenizer, "fast": FASTActionTokenizer}


def load_episodes(path: str | Path) -> list[np.ndarray]:
    """Episodes [T_i, D] from an .npz or from webdataset shards (samples without `actions.npy` are skipped and
    counted)."""
    if str(path).endswith(".npz"):
        return _load_npz(Path(path))
    urls, _ = resolve_shards(path)
    episodes, skipped = [], 0
    for raw in read_raw(urls):
        if "actions.npy" not in raw:
            skipped += 1
            continue
        actions = decode_npy(raw["actions.npy"])
        if actions.ndim != 2:
            raise ActionTokenizerError(f"sample {raw.get('__key__')} in {raw.get('__url__')}: actions.npy must be "
                                       f"[T, D], got {actions.shape}.")
        episodes.append(actions)
    if skipped:
        print(f"skipped {skipped} samples without actions.npy", file=sys.stderr)
    if not episodes:
        raise ActionTokenizerError(f"--data {path}: no sample has actions.npy.")
    return episodes


def _load_npz(path: Path) -> list[np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"--data {path} does not exist.")
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files)
        if "actions" in keys:
            actions = data["actions"]
            if actions.ndim != 3:
                raise ActionTokenizerError(f"{path}: `actions` must be [N, T, D], got {actions.shape}.")
            lengths = data["lengths"] if "lengths" in keys else np.full(len(actions), actions.shape[1])
            if lengths.shape != (len(actions),) or np.any(lengths < 1) or np.any(lengths > actions.shape[1]):
                raise ActionTokenizerError(f"{path}: `lengths` must be [N] integers in [1, T], got {lengths!r}.")
            return [actions[i, : int(n)] for i, n in enumerate(lengths)]
        episodes = []
        for key in keys:
            arr = data[key]
            if arr.ndim != 2:
                raise ActionTokenizerError(f"{path}: episode `{key}` must be [T, D], got {arr.shape}; or store all "
                                           "episodes as one array `actions` [N, T, D].")
            episodes.append(arr)
    if not episodes:
        raise ActionTokenizerError(f"{path} holds no arrays.")
    return episodes



def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-actions", help="fit an action tokenizer (bins or FAST) on episodes and save it",
        description="Fit an action tokenizer on episodes from an .npz (`actions` [N, T, D] or one [T, D] array per "
                    "key) or webdataset shards (`actions.npy` per sample), save it, and print a summary.")
    parser.add_argument("--kind", choices=sorted(KINDS), required=True, help="bins (OpenVLA-style) or fast (DCT+BPE)")
    parser.add_argument("--data", required=True, help=".npz file, or shard directory / glob / brace pattern / .tar")
    parser.add_argument("--out", required=True, help="output folder for action_tokenizer.json (+ fast_bpe.json)")
    parser.add_argument("--horizon", type=int, default=8, help="chunk length H in steps (default 8)")
    parser.add_argument("--stride", type=int, default=1, help="steps between chunk starts (default 1)")
    parser.add_argument("--pad", choices=PAD_MODES, default="last",
                        help="padding of chunks past the episode end: last (repeat), zeros, none (drop)")
    parser.add_argument("--norm", choices=NORM_MODES, default="quantile", help="quantile (q01/q99) or minmax bounds")
    parser.add_argument("--low-quantile", type=float, default=0.01)
    parser.add_argument("--high-quantile", type=float, default=0.99)
    parser.add_argument("--exclude-dims", type=int, nargs="*", default=[],
                        help="dimensions left unnormalised (already in [-1, 1], e.g. a gripper)")
    parser.add_argument("--bins", type=int, default=256, help="bins: number of bins (default 256)")
    parser.add_argument("--scale", type=float, default=10.0, help="fast: DCT coefficient scale (default 10)")
    parser.add_argument("--bpe-vocab-size", type=int, default=1024, help="fast: BPE vocabulary size (default 1024)")
    parser.add_argument("--length", type=int, default=None,
                        help="fast: report the fraction of chunks that fit this fixed token length")
    parser.add_argument("--max-eval-chunks", type=int, default=20000,
                        help="chunks used for the round-trip summary (a seeded random subset; default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation subset")
    parser.set_defaults(func=run_fit_actions)


def run_fit_actions(args: argparse.Namespace) -> int:
    episodes = load_episodes(args.data)
    chunks, valid = chunk_episodes(episodes, args.horizon, args.stride, args.pad)
    common = dict(norm=args.norm, low_quantile=args.low_quantile, high_quantile=args.high_quantile,
                  exclude_dims=args.exclude_dims)
    if args.kind == "bins":
        tokenizer: Any = BinActionTokenizer(n_bins=args.bins, **common)
    else:
        tokenizer = FASTActionTokenizer(scale=args.scale, bpe_vocab_size=args.bpe_vocab_size, **common)
    tokenizer.fit(chunks, valid)
    out = tokenizer.save_pretrained(args.out)

    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(chunks), size=min(len(chunks), args.max_eval_chunks), replace=False))
    sub, sub_valid = chunks[pick], valid[pick]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ActionClippingWarning)  # reported below as a number instead
        codes, enc = tokenizer.encode(sub, return_info=True)
    recon = tokenizer.decode(codes, dtype=np.float64)
    err = np.abs(recon - sub)[sub_valid]  # [n_valid_steps, D]
    summary: dict[str, Any] = {
        "kind": tokenizer.kind, "episodes": len(episodes), "chunks": int(len(chunks)), "horizon": args.horizon,
        "action_dim": tokenizer.action_dim, "vocab_size": tokenizer.vocab_size,
        "low": tokenizer.normalizer.low.tolist(), "high": tokenizer.normalizer.high.tolist(),
        "excluded_dims": tokenizer.normalizer.exclude_dims,
        "eval_chunks": int(len(sub)), "clipped_fraction": enc.clipped_fraction,
        "max_abs_error": err.max(axis=0).tolist(), "rms_error": np.sqrt((err ** 2).mean(axis=0)).tolist(),
    }
    if tokenizer.kind == "fast":
        counts = enc.tokens_per_chunk
        summary.update(mean_tokens_per_chunk=float(counts.mean()), max_tokens_per_chunk=int(counts.max()),
                       p99_tokens_per_chunk=int(np.quantile(counts, 0.99, method="higher")),
                       values_per_chunk=args.horizon * tokenizer.action_dim)
        if args.length is not None:
            summary.update(length=args.length, fraction_not_fitting=float((counts > args.length).mean()))
    atomic_write_text(Path(out) / "fit_summary.json", json.dumps(summary, indent=2))

    print(f"fitted a {tokenizer.kind} action tokenizer on {len(episodes)} episodes, {len(chunks)} chunks of "
          f"{args.horizon} x {tokenizer.action_dim}; vocab_size (its share of the unified vocabulary) = "
          f"{tokenizer.vocab_size}")
    print(f"{'dim':>4} {'low':>11} {'high':>11} {'max|err|':>10} {'rms err':>10}")
    for d in range(tokenizer.action_dim):
        tag = "  (excluded)" if d in tokenizer.normalizer.exclude_dims else ""
        print(f"{d:>4} {summary['low'][d]:>11.5g} {summary['high'][d]:>11.5g} {summary['max_abs_error'][d]:>10.3g} "
              f"{summary['rms_error'][d]:>10.3g}{tag}")
    print(f"round trip on {len(sub)} chunks (real units, valid steps); clipped values: "
          f"{100 * enc.clipped_fraction:.2f}%")
    if tokenizer.kind == "fast":
        print(f"tokens per chunk: mean {summary['mean_tokens_per_chunk']:.2f}, p99 {summary['p99_tokens_per_chunk']},"
              f" max {summary['max_tokens_per_chunk']} (for {summary['values_per_chunk']} values)")
        if args.length is not None:
            print(f"fixed length {args.length}: {100 * summary['fraction_not_fitting']:.2f}% of chunks do not fit")
    print(f"saved to {out}")
    return 0
