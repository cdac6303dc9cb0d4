import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer_fixtures import make_setup, write_config
from unimask.config import load_config
from unimask.model import MaskedDiffusionTransformer
from unimask.training.checkpoints import latest_tag
from unimask.training.train_config import TrainConfig

TESTS = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
       "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("trainer") / "setup")["root"]


def run_cli(args, env=None, check=True):
    out = subprocess.run([sys.executable, "-m", "unimask.cli", *args], capture_output=True, text=True,
                         env=env or ENV, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_single_process_trains_and_export_matches_engine(setup, tmp_path):
    from unimask.training.trainer import Trainer

    config = load_config(write_config(setup, tmp_path / "run", steps=40), TrainConfig,
                         ["optim.warmup=5", "train.sample_every=20"])
    trainer = Trainer(config)
    losses = []
    add = trainer.window.add_micro_batch  # every micro-batch's loss, as the trainer accumulates it
    trainer.window.add_micro_batch = lambda result, *rest: (losses.append(float(result.loss.detach())), add(result, *rest))
    trainer.train()
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses
    trainer.export(tmp_path / "bundle", use_ema=False)
    loaded = MaskedDiffusionTransformer.from_pretrained(tmp_path / "bundle")
    ids = torch.randint(0, loaded.config.vocab_size, (2, 20))
    trainer.engine.module.eval()
    # the trainer's attention kernel is a runtime choice, not saved; equal kernels make the weights' equality exact
    loaded.attention_kernel = trainer.engine.module.attention_kernel
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, trainer.engine.module(ids).logits)
    assert (tmp_path / "run" / "tensorboard").is_dir() and (tmp_path / "run" / "config.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step00000020.png", "step00000040.png"]
    run_cli(["export", str(tmp_path / "run"), "--out", str(tmp_path / "bundle2")])
    again = MaskedDiffusionTransformer.from_pretrained(tmp_path / "bundle2")
    again.attention_kernel = loaded.attention_kernel
    with torch.no_grad():
        assert torch.equal(again(ids).logits, loaded(ids).logits)


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    """The parameters of uninterrupted 12-step runs, on one rank and on two."""
    out = tmp_path_factory.mktemp("straight")
    params = {}
    for ranks in (1, 2):
        run_cli(["train", "--config", str(write_config(setup, out / f"r{ranks}", steps=12, ranks=ranks)), "--export",
                 str(out / f"bundle{ranks}")])
        params[ranks] = MaskedDiffusionTransformer.from_pretrained(out / f"bundle{ranks}").state_dict()
    return params


def assert_same_parameters(expected: dict, bundle: Path) -> None:
    """Tolerance: parameters equal within 1e-6 (fp32, same data, same masking and augmentation draws)."""
    got = MaskedDiffusionTransformer.from_pretrained(bundle).state_dict()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("ranks", [1, 2])
def test_resume_reproduces_the_uninterrupted_run(setup, straight, tmp_path, ranks):
    split = write_config(setup, tmp_path / "split", steps=12, ranks=ranks)
    run_cli(["train", "--config", str(split), "--stop-after", "6"])
    assert latest_tag(tmp_path / "split" / "checkpoints") == "step00000006"
    run_cli(["train", "--config", str(split), "--export", str(tmp_path / "b")])
    assert_same_parameters(straight[ranks], tmp_path / "b")
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 12


def test_resume_through_zero_2_reproduces_the_uninterrupted_run(setup, tmp_path):
    zero2 = str(TESTS.parent / "configs" / "deepspeed" / "zero2.json")
    run_cli(["train", "--config", str(write_config(setup, tmp_path / "a", steps=8, deepspeed=zero2)), "--export",
             str(tmp_path / "bundle-a")])
    split = write_config(setup, tmp_path / "split", steps=8, deepspeed=zero2)
    run_cli(["train", "--config", str(split), "--stop-after", "4"])
    run_cli(["train", "--config", str(split), "--export", str(tmp_path / "bundle-b")])
    assert_same_parameters(MaskedDiffusionTransformer.from_pretrained(tmp_path / "bundle-a").state_dict(),
                           tmp_path / "bundle-b")


def test_sigkill_during_checkpoint_write_resumes_from_previous_good_one(setup, straight, tmp_path):
    config = write_config(setup, tmp_path / "run", steps=12)
    killed = subprocess.run([sys.executable, str(TESTS / "kill_during_save.py"), "12", "train", "--config", str(config)],
                            capture_output=True, text=True, env=ENV, timeout=900)
    assert killed.returncode == -9, killed.stderr[-3000:]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "step00000012").is_dir()  # the half-finished save is there ...
    assert latest_tag(checkpoints) == "step00000006"  # ... but LATEST still names the last complete one
    out = run_cli(["train", "--config", str(config), "--export", str(tmp_path / "b")])
    assert "resumed from" in out.stdout + out.stderr and "step00000006" in out.stdout + out.stderr
    assert latest_tag(checkpoints) == "step00000012"
    assert_same_parameters(straight[1], tmp_path / "b")  # the run killed and resumed is the uninterrupted one


@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_deepspeed_lowers_loss_with_identical_parameters(setup, tmp_path, stage):
    config = write_config(setup, tmp_path / f"zero{stage}", steps=30,
                          deepspeed=str(TESTS.parent / "configs" / "deepspeed" / f"zero{stage}.json"))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + stage), str(TESTS / "dist_train_script.py"), str(config)],
                         capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"zero{stage}" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
    for rank in ranks:
        assert np.mean(rank["losses"][-6:]) < 0.8 * np.mean(rank["losses"][:6]), rank["losses"]


def test_dry_run_prints_memory_per_rank(tmp_path):
    out = run_cli(["train", "--config", str(TESTS.parent / "configs" / "base-gpu.yaml"), "--dry-run",
                   "--world-size", "8"])
    assert "ZeRO-2 (configured)" in out.stdout and "parameters:" in out.stdout


def test_a_world_of_one_made_in_process_is_not_mistaken_for_a_launcher():
    """After one in-process training (which sets RANK for its own world of one) the next `run_training` in the same
    process still starts one rank per core; a process a launcher started stays one rank."""
    script = ("from types import SimpleNamespace as N\n"
              "from unimask.training import engines, launch\n"
              "config = N(train=N(ranks=0))\n"
              "before = engines.launched_as_a_rank()\n"
              "engines.init_distributed(False)\n"
              "print(before, engines.launched_as_a_rank(), launch.local_ranks(config) == launch.available_cores())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    run = lambda extra: subprocess.run([sys.executable, "-c", script], env={**env, **extra}, capture_output=True,  # noqa: E731
                                       text=True, check=True).stdout.split()
    assert run({}) == ["False", "False", "True"]
    launched = run({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": "29533"})
    assert launched[:2] == ["True", "True"]
