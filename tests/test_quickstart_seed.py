"""`unimask quickstart --seed N` seeds everything it draws: the same seed writes the same data, tokenizers (trained in
the run with --retrain-tokenizers) and plan, byte for byte; another seed writes other data (checked on a tiny plan,
up to the training config)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")
pytest.importorskip("webdataset")

from unimask.training import quickstart  # noqa: E402

TINY = quickstart.QuickstartPlan(shapes_train=24, shapes_test=8, mt10_train_episodes=1, mt10_test_episodes=1,
                                 vq_steps=3, vq_max_images=64, model={"d_model": 32, "n_layers": 1, "n_heads": 2},
                                 train_steps=2, batch_size=4, lr=1e-3, shapes_weight=1.0, eval_caption=4,
                                 eval_t2i_per_class=1, eval_shapes=2, eval_vla_episodes=1, judge_epochs=1)


def files(root: Path) -> dict[str, bytes]:
    """Every written file's bytes, except stage markers and cards (they record times)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".stages" not in p.parts and p.name != "dataset.json" and p.suffix != ".log"}


def test_the_same_seed_writes_the_same_run_and_another_seed_another(tmp_path, monkeypatch):
    monkeypatch.setitem(quickstart.PLANS, "tiny", TINY)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        quickstart.run_quickstart(tmp_path / name, "tiny", seed=seed, until="plan", retrain_tokenizers=True)
    a, b, c = (files(tmp_path / name) for name in "abc")
    shards = [k for k in a if k.endswith(".tar")]
    assert shards and any("mt10" in k for k in shards) and any(k.endswith(".safetensors") for k in a)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k] and not k.endswith(".yaml")]
    assert not different, different
    configs = [k for k in a if k.endswith(".yaml")]  # they name their run folder: compared with it replaced
    assert "train.yaml" in configs and "tokenizers/vq/config.yaml" in configs
    for key in configs:
        yaml_a, yaml_b = (run[key].decode().replace(str(tmp_path / n), "RUN") for run, n in ((a, "a"), (b, "b")))
        assert yaml_a == yaml_b, key
    assert "seed: 3" in a["train.yaml"].decode()
    assert any(a[k] != c.get(k) for k in shards)
