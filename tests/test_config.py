from dataclasses import dataclass, field

import pytest

from unimask.config import ConfigError, load_config, save_config


@dataclass
class Optim:
    lr: float = 1e-3  # learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # Adam betas


@dataclass
class Run:
    name: str = "x"  # run name
    steps: int = 10  # steps
    optim: Optim = field(default_factory=Optim)  # optimizer


def test_load_with_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\noptim:\n  lr: 3e-4\n")
    cfg = load_config(path, Run, ["steps=20", "optim.betas=[0.8, 0.9]"])
    assert cfg == Run("demo", 20, Optim(3e-4, [0.8, 0.9]))
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml", Run) == cfg


def test_unknown_key_names_dotted_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key optim\.learning_rate"):
        load_config(path, Run)


def test_wrong_type_names_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: many\n")
    with pytest.raises(ConfigError, match="steps must be of type int"):
        load_config(path, Run)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", Run)
