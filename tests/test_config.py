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


def test_a_setting_checks_type_and_range_and_names_its_dotted_key():
    from unimask.config import Setting

    length = Setting("signal_length", int, 4, "values per signal", minimum=1, maximum=64)
    assert length.validate(64, "sequence") == 64
    with pytest.raises(ConfigError, match=r"sequence\.signal_length must be >= 1 \(values per signal\), got 0\."):
        length.validate(0, "sequence")
    with pytest.raises(ConfigError, match=r"sequence\.signal_length must be <= 64 \(values per signal\), got 65\."):
        length.validate(65, "sequence")
    with pytest.raises(ConfigError, match=r"sequence\.signal_length must be of type int, got 'long'"):
        length.validate("long", "sequence")
    with pytest.raises(ConfigError, match=r"sequence\.signal_length must be set"):
        length.validate(None, "sequence")
    assert Setting("codes", int | None, None, "codes per chunk", minimum=1).validate(None, "sequence") is None


def test_sequence_settings_keep_their_yaml_keys_and_round_trip(tmp_path):
    from pathlib import Path

    from unimask.training.train_config import TrainConfig

    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
    cfg = load_config(tiny, TrainConfig, ["sequence.action_length=12"])
    assert (cfg.sequence.caption_length, cfg.sequence.max_condition_text, cfg.sequence.action_horizon,
            cfg.sequence.action_dim, cfg.sequence.action_length) == (24, 24, 8, 4, 12)
    save_config(cfg, tmp_path / "out.yaml")
    assert "caption_length: 24" in (tmp_path / "out.yaml").read_text()
    assert load_config(tmp_path / "out.yaml", TrainConfig) == cfg
    with pytest.raises(ConfigError, match=r"sequence\.action_horizon must be >= 1 \(actions per chunk\), got 0"):
        load_config(tiny, TrainConfig, ["sequence.action_horizon=0"])
    with pytest.raises(ConfigError, match=r"unknown config key sequence\.horizon;.*action_horizon"):
        load_config(tiny, TrainConfig, ["sequence.horizon=8"])
