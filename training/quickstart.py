"""`unimask quickstart`: everything from nothing on one machine, resumable stage by stage.

data (digits, shapes, Meta-World MT10) -> text tokenizer -> VQ tokenizer -> action + state tokenizers ->
pre-tokenized shards -> ONE unified model (captions, text-to-image, robot actions) -> export -> evaluation ->
report.md / report.json / pictures.

Each stage is skipped when its marker exists (`<out>/.stages/`), so an interrupted run continues where it stopped.
`--mode quick` is sized for about 15 minutes on 2 CPU cores, `--mode full` for about 90, `--mode gpu` for about 10 on
one modern GPU. `--seed N` seeds everything
the run draws (data splits and sampling, the tokenizers, the model, the data order); evaluation uses the fixed
held-out episode seeds and sampling seeds of `unimask eval`, so runs of different seeds are measured alike.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unimask.atomic import atomic_write_text


@dataclass
class QuickstartPlan:
    shapes_train: int  # shapes scenes in the train split
    shapes_test: int  # shapes scenes in the test split
    mt10_train_episodes: int  # successful expert episodes per task (train)
    mt10_test_episodes: int  # per task (test)
    vq_steps: int  # VQ tokenizer training steps
    vq_max_images: int  # images the VQ trains on
    model: dict  # model section of the train config (the pixel encoder included)
    train_steps: int  # unified-model optimizer steps
    batch_size: int  # sequences per step on each rank
    lr: float  # peak learning rate
    shapes_weight: float  # mix weight of each shapes stream (each digits stream weighs 2)
    eval_caption: int  # held-out images captioned per dataset
    eval_t2i_per_class: int  # generated digits per class for the judge
    eval_shapes: int  # shapes prompts generated and read back
    eval_vla_episodes: int  # closed-loop episodes per MT10 task
    judge_epochs: int  # epochs of the digit judge
    ranks: int = 0  # data-parallel training ranks (0: one per CPU core)
    vq_batch: int = 16  # VQ tokenizer batch size
    loader_workers: int = 0  # DataLoader workers per rank (0: read in the training process)
    compile: bool = False  # torch.compile the model (pays off on a GPU)
    vla_weight: float = 2.0  # mix weight of the MT10 stream
    mt10_frame_stride: int = 1  # keep one step in this many of each MT10 episode (more episodes per render time)


PLANS = {
    # bf16 matrix products and SDPA's math attention make a training step of the quick model take about 0.31 s on 2
    # CPU cores (two ranks of 32), and the shipped tokenizers leave the run its minutes: 1,700 steps fit.
    "quick": QuickstartPlan(shapes_train=4000, shapes_test=300, mt10_train_episodes=12, mt10_test_episodes=2,
                            vq_steps=300, vq_max_images=12000,
                            model={"d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 256},
                            train_steps=1700, batch_size=32, lr=2e-3, shapes_weight=0.25, eval_caption=200,
                            eval_t2i_per_class=20, eval_shapes=60, eval_vla_episodes=10, judge_epochs=6,
                            vla_weight=2.5),
    # The same model for about an hour of steps (56 min measured); 100 demonstrations per task, one frame in four of each kept (ten
    # times the episodes of quick mode for the same rendering time per sample); MT10 weighs most.
    "full": QuickstartPlan(shapes_train=20000, shapes_test=2000, mt10_train_episodes=100, mt10_test_episodes=5,
                           vq_steps=800, vq_max_images=30000,
                           model={"d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 256},
                           train_steps=12000, batch_size=32, lr=2e-3, shapes_weight=0.5, eval_caption=364,
                           eval_t2i_per_class=20, eval_shapes=200, eval_vla_episodes=20, judge_epochs=8,
                           vla_weight=4.0, mt10_frame_stride=4),
    # One modern GPU for about 10 minutes: 100 demonstrations per task, a 26 M-parameter model, large batches; the
    # data stages use every CPU core of the machine.
    "gpu": QuickstartPlan(shapes_train=20000, shapes_test=2000, mt10_train_episodes=100, mt10_test_episodes=5,
                          vq_steps=2000, vq_max_images=30000,
                          model={"d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 256},
                          train_steps=8000, batch_size=128, lr=1e-3, shapes_weight=1.0, eval_caption=364,
                          eval_t2i_per_class=20, eval_shapes=200, eval_vla_episodes=20, judge_epochs=8, ranks=1,
                          vq_batch=64, loader_workers=6, compile=True),
}


def _copy_builtin_tokenizers(tok: Path) -> dict[str, Any]:
    """The shipped text and VQ tokenizers of the built-in data, copied into the run (`unimask builtin-tokenizers`)."""
    import shutil

    from unimask.training.builtin_tokenizers import builtin_folder

    source = builtin_folder()
    shutil.copytree(source / "text", tok / "text", dirs_exist_ok=True)
    shutil.copytree(source / "vq", tok / "vq" / "tokenizer", dirs_exist_ok=True)
    return {"from": str(source), **json.loads((source / "build.json").read_text())}


def _pretokenize_dataset(data: Path, tok: Path, name: str, modalities: tuple[str, ...]) -> dict[str, int]:
    """`data/<name>` -> `data/<name>-tok` with the codes of `modalities` (one thread; a quickstart worker)."""
    import torch

    from unimask.registry import get_modality
    from unimask.training.data.pretokenize import pretokenize_shards

    torch.set_num_threads(1)
    folders = {"image": tok / "vq" / "tokenizer", "action": tok / "actions"}
    # Conditions read as pixels are stored ready for the encoder: no PNG is decoded while training.
    tokenizers = {modality: get_modality("pixels").tokenizer_for(PIXEL_ENCODER) if modality == "pixels"
                  else get_modality(modality).load_tokenizer(folders[modality]) for modality in modalities}
    if torch.cuda.is_available():  # the VQ encoder on the GPU where there is one
        for tokenizer in tokenizers.values():
            if hasattr(tokenizer, "to"):
                tokenizer.to("cuda")
    return _counts(pretokenize_shards(data / name, data / f"{name}-tok", tokenizers))


def _counts(card: dict[str, Any]) -> dict[str, int]:
    return {split: info["count"] for split, info in card["splits"].items()}


def _fit_action_tokenizers(mt10: Path, out: Path) -> dict[str, Any]:
    """Action bins (q01/q99) and state bins (min/max) fitted on the train split, read without decoding a frame."""
    from unimask.modality import decode_npy
    from unimask.tokenizers.action import BinActionTokenizer
    from unimask.training.data.format import read_raw, resolve_shards

    chunks, valid, states = [], [], []
    for raw in read_raw(resolve_shards(mt10, "train")[0]):
        chunk = decode_npy(raw["actions.npy"])
        chunks.append(chunk)
        valid.append(np.arange(len(chunk)) < json.loads(raw["json"]).get("valid_steps", len(chunk)))
        states.append(decode_npy(raw["state.npy"]))
    chunks, valid = np.stack(chunks), np.stack(valid)
    # The gripper (last dimension) is already in [-1, 1]: keep it out of the normalisation.
    actions = BinActionTokenizer(n_bins=256, exclude_dims=(3,)).fit(chunks, valid=valid)
    actions.save_pretrained(out / "actions")
    state = BinActionTokenizer(n_bins=64, norm="minmax").fit(np.stack(states))
    state.save_pretrained(out / "state")
    error = np.abs(actions.decode(actions.encode(chunks)) - chunks)[valid].max()
    return {"chunks": int(len(chunks)), "action_round_trip_max_error": float(error)}


# Images that are only read (caption sources, robot observations) go through the pixel encoder; VQ codes stay the
# target of text to image. Guidance is used by text to image only, so only t2i rows train the unconditional branch.
# Decoding starts from a fully masked target, and robot chunks are decoded in two steps: half of the action targets
# (and a share of the captions) are masked whole. Action bins are ordered: they learn from a Gaussian target over
# neighbouring bins (docs/results.md measures each of these: ablation, robot-policy proxy, conditioning).
CONDITIONS = {"i2t": {"image": ["pixels"]}, "vla": {"image": ["pixels"]}}
MASKING = {"p_uncond": 0.1, "condition_dropout": {"i2t": 0.0, "vla": 0.0},
           "full_mask": {"vla": 0.5, "i2t": 0.3}, "ordinal_sigma": {"action": 2.0}}
PIXEL_ENCODER = {"resolution": 64, "tokens": 16, "channels": [32, 64, 128], "shift": 4}
# Each payload token knows its place in its segment (the step and dimension of an action code, the cell of an image
# code): on the one-task reach proxy it lowered the action error of 400 steps from 0.038 to 0.034 (docs/results.md).
SEGMENT_POSITIONS = 64


def train_config(out: Path, plan: QuickstartPlan, seed: int = 0) -> dict[str, Any]:
    data = out / "data"
    return {
        "model": {**plan.model, "attention": "prefix", "encoders": {"pixels": PIXEL_ENCODER},
                  "segment_positions": SEGMENT_POSITIONS},
        "init": {"codebook_embeddings": ["image", "action", "state"]},
        "tokenizers": {"text": str(out / "tokenizers" / "text"), "image": str(out / "tokenizers" / "vq" / "tokenizer"),
                       "action": str(out / "tokenizers" / "actions"), "state": str(out / "tokenizers" / "state")},
        "sequence": {"caption_length": 24, "max_condition_text": 24, "action_horizon": 8, "action_dim": 4,
                     "conditions": CONDITIONS},
        # Captions are targets in one canonical wording ("first"); prompts and instructions keep their paraphrases.
        "data": {"streams": [{"dataset": str(data / "digits-tok"), "task": "i2t", "weight": 2.0, "text": "first"},
                             {"dataset": str(data / "digits-tok"), "task": "t2i", "weight": 2.0},
                             {"dataset": str(data / "shapes-tok"), "task": "i2t", "weight": plan.shapes_weight,
                              "text": "first"},
                             {"dataset": str(data / "shapes-tok"), "task": "t2i", "weight": plan.shapes_weight},
                             {"dataset": str(data / "mt10-tok"), "task": "vla", "weight": plan.vla_weight}],
                 "batch_size": plan.batch_size, "shuffle_buffer": 1000, "seed": seed,
                 "num_workers": plan.loader_workers, "pad_multiple": 16 if plan.compile else 1},
        "masking": MASKING,
        "optim": {"lr": plan.lr, "warmup": max(20, plan.train_steps // 20)},
        "train": {"out": str(out / "train"), "steps": plan.train_steps, "log_every": 20, "seed": seed,
                  "checkpoint_every": max(100, plan.train_steps // 4), "keep_last": 1, "ranks": plan.ranks,
                  "compile": plan.compile},
    }


def run_quickstart(out: str | Path, mode: str = "quick", seed: int = 0, until: str = "",
                   retrain_tokenizers: bool = False) -> dict[str, Any]:
    """Every stage, or the stages up to `until="plan"`: data, tokenizers, pre-tokenized shards and `train.yaml`.
    The text and VQ tokenizers are the shipped ones of the built-in data unless `retrain_tokenizers`."""
    import yaml

    from unimask.training.stages import StageRunner

    if mode not in PLANS:
        raise ValueError(f"`mode` must be one of {sorted(PLANS)}, got {mode!r}.")
    plan = PLANS[mode]
    out = Path(out)
    runner = StageRunner(out)
    data, tok = out / "data", out / "tokenizers"
    started = time.time()

    from unimask.training.data.writers.digits import write_digits
    from unimask.training.data.writers.metaworld import write_metaworld
    from unimask.training.data.writers.shapes import write_shapes

    runner.run("data-digits", lambda: _counts(write_digits(data / "digits", seed=seed)), data / "digits")
    runner.run("data-shapes", lambda: _counts(write_shapes(data / "shapes", train=plan.shapes_train,
                                                           test=plan.shapes_test, seed=seed)), data / "shapes")
    from unimask.training.launch import available_cores

    runner.run("data-mt10", lambda: _counts(write_metaworld(data / "mt10", train_episodes=plan.mt10_train_episodes,
                                                            test_episodes=plan.mt10_test_episodes,
                                                            frame_stride=plan.mt10_frame_stride,
                                                            workers=available_cores(), seed=seed)), data / "mt10")

    if retrain_tokenizers:
        from unimask.training.builtin_tokenizers import train_text, vq_config
        from unimask.training.vq_trainer import train_vq

        runner.run("tokenizer-text", lambda: train_text(data, tok / "text"), tok / "text")
        def vq() -> dict[str, Any]:
            import torch

            torch.set_num_threads(1)  # steady beside another busy process (docs/training.md)
            return train_vq(vq_config(data, plan.vq_steps, plan.vq_batch, seed, plan.vq_max_images), tok / "vq")

        runner.run("tokenizer-vq", vq, tok / "vq")
    else:
        runner.run("tokenizers-builtin", lambda: _copy_builtin_tokenizers(tok), tok)
    runner.run("tokenizer-actions", lambda: _fit_action_tokenizers(data / "mt10", tok), tok / "actions")

    def pretokenize() -> dict[str, Any]:
        # One single-threaded process per dataset, as many at a time as there are cores: a stage of processes keeps
        # its pace beside another busy process, where one process on several threads can stall (docs/training.md).
        import multiprocessing

        from unimask.training.launch import available_cores

        jobs = [(data, tok, name, modalities) for name, modalities in (("digits", ("image", "pixels")),
                                                                      ("shapes", ("image", "pixels")),
                                                                      ("mt10", ("action", "pixels")))]
        with multiprocessing.get_context("spawn").Pool(min(len(jobs), available_cores())) as pool:
            return dict(zip((job[2] for job in jobs), pool.starmap(_pretokenize_dataset, jobs)))

    runner.run("pretokenize", pretokenize, data)

    config_path = out / "train.yaml"
    if not config_path.is_file():
        atomic_write_text(config_path, yaml.safe_dump(train_config(out, plan, seed), sort_keys=False))
    if until == "plan":
        return {"plan": str(config_path)}

    def train() -> dict[str, Any]:
        from unimask.config import load_config
        from unimask.training.launch import run_training
        from unimask.training.train_config import TrainConfig

        return run_training(load_config(config_path, TrainConfig), export=str(out / "model"))

    runner.run("train", train, out / "model")

    def evaluate() -> dict[str, Any]:
        from unimask.training.evaluation.cli import evaluate_checkpoint

        return evaluate_checkpoint(out / "model", data, out / "eval", tasks=("caption", "t2i", "shapes", "vla"),
                                   caption_limit=plan.eval_caption, t2i_per_class=plan.eval_t2i_per_class,
                                   shapes_limit=plan.eval_shapes, vla_episodes=plan.eval_vla_episodes,
                                   vla_workers=available_cores(), judge_dir=out / "judge",
                                   judge_epochs=plan.judge_epochs)

    results = runner.run("eval", evaluate, out / "eval")
    from unimask.training.report import write_report

    report = write_report(out, results, runner.timings(), mode, {**asdict(plan), "seed": seed},
                          time.time() - started)
    print(f"report: {report}")
    return results


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quickstart", help="build data, tokenizers and one unified model, evaluate, report")
    parser.add_argument("--out", default="runs/quickstart", help="run folder (resumes stage by stage)")
    parser.add_argument("--mode", choices=sorted(PLANS), default="quick",
                        help="quick (~15 min on 2 CPU cores), full (~90 min) or gpu (~10 min on one GPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything the run draws (default 0)")
    parser.add_argument("--until", choices=("plan",), default="",
                        help="stop after the data, tokenizers and train.yaml (to train variants of one plan)")
    parser.add_argument("--retrain-tokenizers", action="store_true",
                        help="train the text and VQ tokenizers in the run instead of using the shipped ones")
    parser.set_defaults(func=lambda args: run_quickstart(args.out, args.mode, args.seed, args.until,
                                                         args.retrain_tokenizers) and 0)
