"""Nothing lost, nothing silent in training: non-finite steps are skipped and counted and stop the run with a clear
error, checkpoints are verified and a damaged newest one falls back to the newest intact one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from trainer_fixtures import make_setup, write_config
from unimask.config import ConfigError, load_config
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


def test_resume_refuses_a_changed_setting_naming_it_before_anything_changes(setup, finished, tmp_path, capsys):
    from unimask.cli import main

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"model.d_model \(64 -> 32\);.* optim.weight_decay \(0.01 -> 0.1\).*Set "
                                          r"them back to resume, or start a new run"):
        trainer_for(setup, run, "model.d_model=32", "optim.weight_decay=0.1")
    assert (run / "config.yaml").read_text() == before and not (run / "resumes.jsonl").exists()
    assert main(["train", "--config", str(write_config(setup, run, steps=12)), "data.seed=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "data.seed (0 -> 5)" in err and "Traceback" not in err


def test_resume_applies_and_records_a_new_learning_rate_and_length(setup, finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    trainer = trainer_for(setup, run, "optim.lr=0.0005", "train.steps=14")
    assert trainer.step == 12 and trainer.engine.scheduler.base_lrs == [0.0005, 0.0005]
    assert trainer.engine.get_lr() == pytest.approx(0.0005 * trainer.lr_factor(12))
    trainer.train()
    assert trainer.step == 14
    (record,) = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert record["step"] == 12 and record["checkpoint"] == "step00000012"
    assert record["resume_changes"]["optim.lr"] == {"from": 0.003, "to": 0.0005}
    assert record["resume_changes"]["train.steps"] == {"from": 12, "to": 14}
    assert set(record["resume_changes"]) == {"optim.lr", "train.steps", "train.out"}
    assert load_config(run / "config.yaml", TrainConfig).optim.lr == 0.0005


def test_a_copied_run_exports_without_the_folders_its_config_names(finished, tmp_path, monkeypatch, capsys):
    import yaml

    from unimask.bundle import load_bundle
    from unimask.cli import main
    from unimask.errors import MissingFileError
    from unimask.training.export import export_checkpoint

    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(finished, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["tokenizers"] = {name: f"/nowhere/{name}" for name in config["tokenizers"]}  # as on another machine
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "elsewhere/run", "--out", "bundle"]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.tasks == ["i2t", "t2i"] and bundle.vocab.has("image")
    shutil.rmtree(copy / "processor")  # a run written before runs kept their own copy
    with pytest.raises(MissingFileError, match="tokenizers.text = /nowhere/text"):
        export_checkpoint(copy, tmp_path / "again")
    assert main(["export", str(tmp_path / "no-run"), "--out", "x"]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_config_changes_compare_settings_the_saved_config_has():
    from unimask.config import from_dict, to_dict
    from unimask.training.resume import config_changes

    config = from_dict(TrainConfig, {"masking": {"condition_dropout": {"t2i": 0.2}}, "optim": {"lr": 0.01}})
    saved = to_dict(TrainConfig())
    del saved["train"]["max_nonfinite_steps"]  # a setting a later version added: not a change
    assert config_changes(saved, config) == {"masking.condition_dropout": {"from": {}, "to": {"t2i": 0.2}},
                                             "optim.lr": {"from": 0.001, "to": 0.01}}
