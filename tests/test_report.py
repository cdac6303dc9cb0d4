"""The quickstart report: tables, captions and every picture are written from a run folder (tiny untrained model)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from tiny_bundle import make_tiny_bundle  # noqa: E402

from unimask.training.data.writers.metaworld import write_metaworld  # noqa: E402
from unimask.training.report import write_report  # noqa: E402


def test_report_has_results_captions_and_non_blank_pictures(tmp_path):
    out = tmp_path / "run"
    make_tiny_bundle(out / "model", image_size=64, state_dim=4)
    write_metaworld(out / "data" / "mt10", tasks=["drawer-open-v3"], train_episodes=1, test_episodes=1, horizon=2,
                    workers=1, progress=False)
    (out / "train").mkdir()
    (out / "train" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 5.0 / s, "loss/t2i": 6.0 / s}) + "\n" for s in range(1, 6)))
    results = {"caption": {"dataset": "digits", "n": 4, "digit_accuracy": 0.25,
                           "examples": [{"key": "k", "reference": "the digit 1", "caption": "the digit 7"}]}}

    report = write_report(out, results, {"train": 12.0}, "quick", {"train_steps": 5}, 60.0)

    text = report.read_text()
    assert "| caption | digits | digit_accuracy | 0.250 | 4 |" in text
    assert "| the digit 1 | the digit 7 |" in text and "| train | 12 |" in text
    for name in ("hero.png", "loss.png", "denoise_digit.png", "denoise_shapes.png", "actions.png", "episode.png"):
        assert f"](pictures/{name})" in text
        assert np.asarray(Image.open(out / "pictures" / name).convert("L")).std() > 5, name
    assert Image.open(out / "pictures" / "actions.png").height == 4 * 150  # one panel per action dimension
    assert json.loads((out / "report.json").read_text())["results"]["caption"]["n"] == 4


def test_report_command_draws_the_pictures_again_and_copies_the_hero(tmp_path, capsys):
    from unimask.cli import main

    out = tmp_path / "run"
    assert main(["report", "--run", str(out)]) == 2 and "has no exported model" in capsys.readouterr().err
    make_tiny_bundle(out / "model", image_size=64, state_dim=4)
    write_metaworld(out / "data" / "mt10", tasks=["drawer-open-v3"], train_episodes=1, test_episodes=1, horizon=2,
                    workers=1, progress=False)
    hero = tmp_path / "docs" / "images" / "hero.png"

    assert main(["report", "--run", str(out), "--hero", str(hero)]) == 0

    assert not (out / "report.md").exists() and "report.md is left as it is" in capsys.readouterr().out
    assert hero.read_bytes() == (out / "pictures" / "hero.png").read_bytes()
    # Two rows of five cells (text to image, then captions), each a 128-pixel picture above its text.
    width, height = Image.open(hero).size
    assert width == 5 * (128 + 8) + 8 and height > 2 * (128 + 30)
