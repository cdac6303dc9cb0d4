"""Tokenizers of the built-in data, trained once by this command and shipped with unimask (`tokenizers/builtin/`), so
a quickstart spends its minutes on the model rather than on tokenizers every run would train alike:

- `text/`: a byte-level BPE (512 tokens) over every caption, prompt and instruction the built-in writers produce;
- `vq/`: a VQ image tokenizer (64 x 64 -> 8 x 8 codes of a 512-entry codebook, `configs/vq/tiny-cpu.yaml`'s
  architecture) trained on digits, shapes scenes and Meta-World frames (the frames a foresight row writes), stored
  in half precision (it loads in single precision).

    unimask builtin-tokenizers --out tokenizers/builtin --work runs/builtin-tokenizers

`unimask quickstart --retrain-tokenizers` trains both inside the run instead. The data, seeds and settings are
fixed, so the command makes the same tokenizers again on the same machine type.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

VQ_STEPS = 1500
BUILTIN = "builtin"  # the folder beside the tokenizer modules (package data of unimask.tokenizers)


def builtin_folder() -> Path:
    """Where the shipped tokenizers are (`<unimask.tokenizers>/builtin`)."""
    import unimask.tokenizers

    return Path(unimask.tokenizers.__path__[0]) / BUILTIN


def texts_of(dataset: Path, task: str) -> list[str]:
    """Every paraphrase of every training sample's text (captions, prompts, instructions)."""
    from unimask.training.data.loader import iterate_samples

    texts: list[str] = []
    for sample in iterate_samples(dataset, split="train", task=task):
        texts += sample["text"].paraphrases
    return texts


def train_text(data: Path, out: Path) -> dict[str, Any]:
    from unimask.tokenizers.text import train_text_tokenizer

    texts = texts_of(data / "digits", "i2t") + texts_of(data / "shapes", "i2t") + texts_of(data / "mt10", "vla")
    tokenizer = train_text_tokenizer(texts, vocab_size=512, out_dir=out)
    return {"texts": len(texts), "size": len(tokenizer)}


def vq_config(data: Path, steps: int, batch_size: int, seed: int, max_images: int = 30000) -> Any:
    """`configs/vq/tiny-cpu.yaml`'s tokenizer trained on the images a unified model writes."""
    from unimask.training.vq_trainer import VQModelConfig, VQTrainConfig

    return VQTrainConfig(data=[str(data / "digits"), str(data / "shapes"), str(data / "mt10")], seed=seed,
                         max_images=max_images, steps=steps, batch_size=batch_size, lr=2e-3, warmup=50,
                         sample_every=steps, checkpoint_every=max(100, steps // 4),
                         model=VQModelConfig(block_out_channels=[16, 32, 64, 64]))


def build_builtin_tokenizers(out: str | Path, work: str | Path, vq_steps: int = VQ_STEPS,
                             seed: int = 0) -> dict[str, Any]:
    """Write the built-in data into `work`, train both tokenizers and save them into `out` (text/, vq/)."""
    import torch

    from unimask.tokenizers.image import VQImageTokenizer
    from unimask.training.data.writers.digits import write_digits
    from unimask.training.data.writers.metaworld import write_metaworld
    from unimask.training.data.writers.shapes import write_shapes
    from unimask.training.launch import available_cores
    from unimask.training.vq_trainer import train_vq

    out, work = Path(out), Path(work)
    data, started = work / "data", time.time()
    if not (data / "digits" / "dataset.json").is_file():
        write_digits(data / "digits", seed=seed)
    if not (data / "shapes" / "dataset.json").is_file():
        write_shapes(data / "shapes", train=4000, test=300, seed=seed)
    if not (data / "mt10" / "dataset.json").is_file():
        write_metaworld(data / "mt10", train_episodes=20, test_episodes=2, frame_stride=4,
                        workers=available_cores(), seed=seed)
    report: dict[str, Any] = {"text": train_text(data, out / "text")}
    torch.set_num_threads(1)  # one thread: predictable beside other work on the machine (docs/training.md)
    report["vq"] = train_vq(vq_config(data, vq_steps, 16, seed), work / "vq")
    tokenizer = VQImageTokenizer.from_pretrained(work / "vq" / "tokenizer")
    tokenizer.model.half()
    if (out / "vq").exists():
        shutil.rmtree(out / "vq")
    tokenizer.save_pretrained(out / "vq")
    report["seconds"] = round(time.time() - started, 1)
    (out / "build.json").write_text(json.dumps({"command": f"unimask builtin-tokenizers --out {out} --vq-steps "
                                                           f"{vq_steps} --seed {seed}", **report}, indent=2) + "\n")
    return report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("builtin-tokenizers", help="train the tokenizers shipped for the built-in data")
    parser.add_argument("--out", default=str(builtin_folder()), help="where to save them (default: the shipped ones)")
    parser.add_argument("--work", default="runs/builtin-tokenizers", help="folder for the data and the VQ run")
    parser.add_argument("--vq-steps", type=int, default=VQ_STEPS, help=f"VQ training steps (default {VQ_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unimask.errors import ConfigError, check_number

    check_number("--vq-steps", args.vq_steps, 1, 10**6, integer=True, error=ConfigError)
    check_number("--seed", args.seed, 0, 2**32 - 1, integer=True, error=ConfigError)
    print(json.dumps(build_builtin_tokenizers(args.out, args.work, args.vq_steps, args.seed), indent=2))
    return 0
