"""Nothing lost, nothing silent in training: non-finite steps are skipped and counted and stop the run with a clear
error, checkpoints are verified and a damaged newest one falls back to the newest intact one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainer_fixtures import make_setup, write_config
from unimask.config import load_config
from unimask.training.checkpoints import CheckpointError, latest_tag
from unimask.training.train_config import TrainConfig
from unimask.training.trainer import Trainer, TrainingDiverged


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("guards") / "setup")["root"]


@pytest.fixture(scope="module")
def finished(setup, tmp_path_factory):
    """A 12-step run with checkpoints at steps 6 and 12."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(load_config(write_config(setup, out, steps=12), TrainConfig)).train()
    return out


def trainer_for(setup, run, *overrides):
    return Trainer(load_config(write_config(setup, run, steps=12), TrainConfig, list(overrides)))


def test_a_diverging_learning_rate_stops_with_an_error_and_keeps_the_last_finite_checkpoint(setup, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(load_config(write_config(setup, run, steps=100, checkpoint_every=1), TrainConfig,
                                  ["optim.lr=1e6", "optim.warmup=1", "train.max_nonfinite_steps=3"]))
    with pytest.raises(TrainingDiverged, match=r"not finite.*optim.lr=1000000.*checkpoint \(step\d+\) is finite"):
        trainer.train()
    tag = latest_tag(run / "checkpoints")
    state = torch.load(run / "checkpoints" / tag / "state.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values())
    if trainer.nonfinite_steps:  # stopped by the skip policy rather than by a non-finite save
        assert trainer.nonfinite_in_a_row == 3
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines] == sorted({row["step"] for row in lines})


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_intact_one(setup, finished, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    state = run / "checkpoints" / "step00000012" / "state.pt"
    data = state.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    state.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"" if damage == "empty" else data)
    (run / "checkpoints" / ".state.pt.x1y2.tmp").write_bytes(b"left by a crash")
    with pytest.warns(UserWarning, match="step00000012 is damaged .* resuming from step00000006"):
        trainer = trainer_for(setup, run)
    assert trainer.step == 6 and not (run / "checkpoints" / ".state.pt.x1y2.tmp").exists()
    trainer.train()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_latest_must_name_a_checkpoint_inside_the_run(setup, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "checkpoints" / "LATEST").write_text("../../elsewhere")
    with pytest.raises(CheckpointError, match="not a checkpoint folder inside"):
        trainer_for(setup, run)


def test_export_refuses_a_model_with_non_finite_parameters(tmp_path):
    from tiny_bundle import make_tiny_bundle
    from unimask.bundle import load_bundle

    bundle = load_bundle(make_tiny_bundle(tmp_path / "good"))
    with torch.no_grad():
        bundle.model.blocks[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite parameters"):
        bundle.save(tmp_path / "bad")
