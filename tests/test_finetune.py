"""Fine-tuning an exported bundle (`unimask train --init-from BUNDLE`), fully or with LoRA adapters merged at export."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import yaml

from trainer_fixtures import make_setup, write_config
from unimask.bundle import load_bundle
from unimask.config import load_config
from unimask.model import MaskedDiffusionTransformer
from unimask.training.finetune import merge_lora
from unimask.training.launch import run_training
from unimask.training.train_config import TrainConfig

CLEAN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # before an in-process run sets RANK / MASTER_PORT


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small model trained on digit captions and pictures, exported as a bundle."""
    root = tmp_path_factory.mktemp("finetune")
    make_setup(root)
    run_training(load_config(write_config(root, root / "base", steps=40), TrainConfig, ["optim.warmup=5"]),
                 export=str(root / "bundle"))
    return root


def finetune_config(root, out, steps=10, init=None, **sections):
    config = {"init": {"bundle": str(root / "bundle"), **(init or {})},
              "data": {"streams": [{"dataset": str(root / "digits"), "task": "i2t", "weight": 1.0}],
                       "batch_size": 8, "shuffle_buffer": 50, "seed": 1},
              "optim": {"lr": 3e-3, "warmup": 2},
              "train": {"out": str(out), "steps": steps, "log_every": 1, "checkpoint_every": steps,
                        "peak_flops": 1e11},
              **sections}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path, TrainConfig)


def first_loss(run):
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_fine_tuning_starts_from_the_bundle_and_keeps_its_tokenizers(base, tmp_path):
    from unimask.training.trainer import Trainer

    trainer = Trainer(finetune_config(base, tmp_path / "ft"))
    bundle = load_bundle(base / "bundle")
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(trainer.engine.module.state_dict()[key], value), key
    assert trainer.vocab.to_dict() == bundle.vocab.to_dict()
    trainer.train()
    # The first fine-tuning step already has the base's low loss; the base's own first step (from scratch) did not.
    assert first_loss(tmp_path / "ft") < 0.8 * first_loss(base / "base")
    trainer.export(tmp_path / "model")
    assert load_bundle(tmp_path / "model").processor.settings == bundle.processor.settings


def test_lora_trains_adapters_only_and_export_merges_them_exactly(base, tmp_path):
    from unimask.training.trainer import Trainer

    trainer = Trainer(finetune_config(base, tmp_path / "lora", steps=12, init={"lora_rank": 4, "lora_alpha": 8}))
    model = trainer.engine.module
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in name for name in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 0.2 * model.num_parameters()
    trainer.train()
    state = model.state_dict()
    bundle = load_bundle(base / "bundle").model.state_dict()
    assert torch.equal(state["blocks.0.attn.q_proj.base_layer.weight"], bundle["blocks.0.attn.q_proj.weight"])
    assert state["blocks.0.attn.q_proj.lora_B.default.weight"].abs().max() > 0  # the adapters moved
    trainer.export(tmp_path / "merged")
    merged = MaskedDiffusionTransformer.from_pretrained(tmp_path / "merged")
    ids = torch.randint(0, merged.config.vocab_size, (2, 30))
    model.eval()
    with torch.no_grad():  # the merged plain model computes what peft's adapter layers computed
        assert torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)
        assert not torch.allclose(merged(ids).logits, load_bundle(base / "bundle").model(ids).logits, atol=1e-3)
    from unimask.training.export import export_checkpoint

    export_checkpoint(tmp_path / "lora", tmp_path / "merged2")
    again = MaskedDiffusionTransformer.from_pretrained(tmp_path / "merged2")
    for key, value in merged.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_merge_lora_is_w_plus_scaled_b_a():
    a, b, w = torch.randn(2, 5), torch.randn(3, 2), torch.randn(3, 5)
    state = {"x.base_layer.weight": w, "x.lora_A.default.weight": a, "x.lora_B.default.weight": b,
             "y.weight": torch.ones(1)}
    merged = merge_lora(state, rank=2, alpha=8)
    assert set(merged) == {"x.weight", "y.weight"}
    assert torch.allclose(merged["x.weight"], w + 4 * b @ a)


def test_fine_tuning_settings_that_contradict_the_bundle_are_refused(base, tmp_path):
    from unimask.training.trainer import Trainer

    with pytest.raises(ValueError, match="model.d_model = 128"):
        Trainer(finetune_config(base, tmp_path / "a", model={"d_model": 128}))
    with pytest.raises(ValueError, match="sequence.action_horizon = 16"):
        Trainer(finetune_config(base, tmp_path / "b", sequence={"action_horizon": 16}))
    with pytest.raises(ValueError, match=r"tokenizers.text"):
        Trainer(finetune_config(base, tmp_path / "c", tokenizers={"text": str(base / "text2")}))
    with pytest.raises(FileNotFoundError, match="unimask export"):
        Trainer(finetune_config(base, tmp_path / "d", init={"bundle": str(tmp_path / "nowhere")}))
    with pytest.raises(ValueError, match="adapts pretrained weights"):
        load_config(write_config(base, tmp_path / "e"), TrainConfig, ["init.lora_rank=4"])
    with pytest.raises(ValueError, match="choose one"):
        load_config(write_config(base, tmp_path / "f"), TrainConfig,
                    [f"init.bundle={base / 'bundle'}", "init.codebook_embeddings=[image]"])


def test_cli_init_from_and_lora_rank(base, tmp_path):
    import subprocess
    import sys

    finetune_config(base, tmp_path / "cli", steps=4)
    path = tmp_path / "cli.yaml"
    data = yaml.safe_load(path.read_text())
    del data["init"]
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "unimask.cli", "train", "--config", str(path), "--init-from",
                          str(base / "bundle"), "--lora-rank", "2", "--export", str(tmp_path / "cli-model")],
                         capture_output=True, text=True, timeout=600, env=CLEAN_ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    resolved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert resolved["init"]["bundle"] == str(base / "bundle") and resolved["init"]["lora_rank"] == 2
    assert "LoRA rank 2:" in out.stdout and np.isfinite(first_loss(tmp_path / "cli"))
    tuned = load_bundle(tmp_path / "cli-model").model.state_dict()
    start = load_bundle(base / "bundle").model.state_dict()
    changed = [k for k in start if not torch.equal(tuned[k], start[k])]
    assert changed and all(k.split(".")[-2].endswith("_proj") for k in changed), changed  # only adapted projections
