"""`unimask export RUN --out DIR`: a run's checkpoint as an inference bundle, without starting a trainer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unimask.bundle import Bundle
from unimask.config import load_config
from unimask.errors import MissingFileError
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.training.checkpoints import CheckpointError, complete_tags, damage, intact_tag, run_processor
from unimask.training.finetune import export_state
from unimask.training.train_config import TrainConfig, trained_tasks
from unimask.training.trainer import mask_schedules


def export_checkpoint(run: str | Path, out: str | Path, tag: str | None = None) -> Path:
    """`unimask export RUN --out DIR [--tag step00001000]`: a complete checkpoint of a run (the newest by default) as
    an inference bundle, without the engine (ZeRO shards of any stage are merged with DeepSpeed's fp32
    consolidation)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise MissingFileError(f"{run} is not a run folder (it has no config.yaml); give the train.out of a run.")
    config = load_config(run / "config.yaml", TrainConfig)
    checkpoints = run / "checkpoints"
    if tag is not None and tag not in complete_tags(checkpoints):
        raise CheckpointError(f"{checkpoints / tag} is not a complete checkpoint; the complete ones are "
                              f"{complete_tags(checkpoints)}.")
    if tag is not None and damage(checkpoints, tag):
        raise CheckpointError(f"checkpoint {checkpoints / tag} is damaged: {damage(checkpoints, tag)}.")
    tag = tag or intact_tag(checkpoints)
    if tag is None:
        raise CheckpointError(f"{run} has no complete checkpoint under checkpoints/; train (or resume) it first.")
    if (checkpoints / tag / "state.pt").is_file():
        state = torch.load(checkpoints / tag / "state.pt", map_location="cpu", weights_only=True)["model"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoints), tag=tag)
    processor = run_processor(run, config)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(**json.loads((run / "model_config.json").read_text())))
    state = export_state(state, config.init)
    if "lm_head.weight" not in state and model.config.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state)
    bundle = Bundle(model.eval(), processor, mask_schedules(config, processor.vocab), tasks=trained_tasks(config))
    return bundle.save(out)
