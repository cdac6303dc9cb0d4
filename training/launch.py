"""`unimask train` and `unimask export`, and where training runs: one process, or one data-parallel rank per CPU core.

A CPU machine trains fastest with one single-threaded rank per core (torch DDP over gloo, each rank on its own share
of the data; two-thread torch on one process is slower on the 2-core machines this was measured on, see
docs/results.md, "Ablation").
`train.ranks` says how many ranks to start here: 1 (one process, the default), N, or 0 (one per available core).
A process started by a launcher (`torchrun`, `deepspeed`: it has RANK set) or a machine with GPUs is left alone:
the launcher decides there.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from unimask.errors import ConfigError, InputError, MissingFileError, check_number
from unimask.training.engines import free_port, launched_as_a_rank
from unimask.training.resume import check_resume

MAX_WORLD = 1_000_000  # ranks --dry-run may assume


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_ranks(config: Any) -> int:
    """How many ranks `run_training` starts on this machine for `config`."""
    if launched_as_a_rank() or torch.cuda.is_available():
        return 1
    return config.train.ranks or available_cores()


def check_before_training(config: Any) -> None:
    """What a config needs from outside it, checked before any training starts: the tokenizer folders, datasets,
    DeepSpeed JSON and causal LM it names exist (a missing one is refused naming its key), it lists at least one
    stream, and its model fits the tokenizers (`check_model_fits`)."""
    from unimask.processor import Processor
    from unimask.training.data.format import resolve_shards
    from unimask.training.train_config import check_model_fits

    named = [(f"tokenizers.{name}", folder) for name, folder in config.tokenizers.items() if folder]
    named += [(key, path) for key, path in (("train.deepspeed", config.train.deepspeed),
                                            ("init.causal_lm", config.init.causal_lm)) if path]
    for key, path in named:
        if not os.path.exists(path):
            raise MissingFileError(f"`{key}` names {path}, which does not exist (relative paths start from "
                                   f"{Path.cwd()}).", key=key)
    if not config.data.streams:
        raise ConfigError("`data.streams` is empty: list at least one {dataset: DIR, task: t2i|i2t|vla|lm}.",
                          key="data.streams")
    for index, stream in enumerate(config.data.streams):
        try:
            resolve_shards(stream.dataset, stream.split)
        except InputError as err:
            raise ConfigError(f"`data.streams[{index}]`: {err}", key=f"data.streams[{index}]") from None
    check_model_fits(config, Processor.from_folders(config.tokenizers, config.sequence, config.model.encoders))


def run_training(config: Any, export: str | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train (resuming if the run folder has a checkpoint) and export when the last step is reached; returns rank 0's
    final metrics, with `step`, `ranks` and `export`. A resume that changes a setting it must not is refused here,
    before any rank starts."""
    check_resume(config.train.out, config)
    ranks = local_ranks(config)
    if ranks == 1:
        return {**_train(config, export, stop_after), "ranks": 1}
    port = free_port()
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    torch.multiprocessing.spawn(_rank, args=(ranks, port, config, export, stop_after, results), nprocs=ranks)
    return {**results.get(), "ranks": ranks}


def _rank(rank: int, world: int, port: int, config: Any, export: str | None, stop_after: int | None,
          results: Any) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    result = _train(config, export, stop_after)
    if rank == 0:
        results.put(result)


def _train(config: Any, export: str | None, stop_after: int | None) -> dict[str, Any]:
    from unimask.training.trainer import Trainer

    trainer = Trainer(config)
    metrics = trainer.train(stop_after=stop_after)
    path = trainer.export(export) if export and trainer.step == config.train.steps else None
    return {"step": trainer.step, "export": str(path) if path else None,
            **{k: v for k, v in metrics.items() if isinstance(v, float)}}


# ----- command line -----------------------------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the unified model (single process, torchrun or deepspeed)")
    train.add_argument("--config", required=True, help="YAML config, e.g. configs/tiny-cpu.yaml")
    train.add_argument("--export", default="", help="after training, write the inference bundle here")
    train.add_argument("--stop-after", type=int, default=0,
                       help="stop with a checkpoint after this step (resume later with the same command)")
    train.add_argument("--init-from", default="", help="fine-tune this exported bundle (init.bundle): its weights, "
                                                       "tokenizers and sequence settings")
    train.add_argument("--lora-rank", type=int, default=None, help="train LoRA adapters of this rank instead of "
                                                                   "every weight (init.lora_rank; merged at export)")
    train.add_argument("--dry-run", action="store_true", help="print parameter count and memory per rank, then exit")
    train.add_argument("--world-size", type=int, default=0, help="ranks assumed by --dry-run (default: the launcher's)")
    train.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by `deepspeed`
    train.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=100")
    train.set_defaults(func=_run_train)
    export = subparsers.add_parser("export", help="write the inference bundle of a run's newest checkpoint")
    export.add_argument("run", help="run folder (train.out)")
    export.add_argument("--out", required=True, help="bundle folder")
    export.add_argument("--tag", default=None, help="checkpoint to export, e.g. step00001000 (default: the newest)")
    export.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from unimask.training.export import export_checkpoint

    if args.tag is not None and (Path(args.tag).name != args.tag or args.tag in ("", ".", "..")):
        raise ConfigError(f"`--tag` must name a checkpoint folder such as step00001000, got {args.tag!r}.", key="--tag")
    print(f"exported to {export_checkpoint(args.run, args.out, args.tag)}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from unimask.config import load_config
    from unimask.training.train_config import TrainConfig

    check_number("--stop-after", args.stop_after, 0, integer=True, fix="0 trains to train.steps", error=ConfigError)
    check_number("--world-size", args.world_size, 0, MAX_WORLD, integer=True, fix="0 takes the launcher's",
                 error=ConfigError)
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not torch.cuda.is_available() else "cuda")
    shortcuts = [f"init.bundle={args.init_from}"] * bool(args.init_from)
    shortcuts += [f"init.lora_rank={args.lora_rank}"] * (args.lora_rank is not None)
    config = load_config(args.config, TrainConfig, [*shortcuts, *args.overrides])
    if config.init.bundle:
        from unimask.training.finetune import resolve_bundle_init

        config = resolve_bundle_init(config)
    if args.dry_run:
        from unimask.training.memory import print_estimate

        print_estimate(config, args.world_size or int(os.environ.get("WORLD_SIZE", 1)))
        return 0
    check_before_training(config)
    result = run_training(config, args.export or None, args.stop_after or None)
    if int(os.environ.get("RANK", 0)) == 0:
        if result["export"]:
            print(f"exported to {result['export']}")
        print(json.dumps(result))
    return 0
