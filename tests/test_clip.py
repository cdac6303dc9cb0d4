"""CLIP score: a small open_clip CLIP trained on real digit pairs learns to match images with captions, is saved in
open_clip's local-dir layout, and loads back by folder or by architecture name + a local weights file."""

import json

import numpy as np
import pytest
import torch

from unimask.training.data.writers.digits import digit_captions, write_digits
from unimask.training.evaluation import suite
from unimask.training.evaluation.clip import (CLIP_CONFIG, CLIP_WEIGHTS, ClipScorer, ClipTrainConfig,
                                              train_clip)
from unimask.training.evaluation.judge import JudgeTooWeakError

CLASS_PROMPTS = [digit_captions(k) for k in range(10)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    write_digits(root / "digits", image_size=32)
    train = [(s["image"], s["text"].paraphrases) for s in suite.iter_test_samples(root / "digits", split="train")]
    test = list(suite.iter_test_samples(root / "digits"))
    config = ClipTrainConfig(min_zero_shot=0.8)
    scorer, accuracy = train_clip(train, [s["image"] for s in test], [s["meta"]["label"] for s in test],
                                  CLASS_PROMPTS, root / "clip", config, progress=False)
    return root, scorer, accuracy, test


def test_trained_clip_reads_digits_and_scores_matching_pairs_higher(trained):
    root, scorer, accuracy, test = trained
    assert accuracy >= 0.8  # chance is 0.1; train_clip itself refuses a CLIP below min_zero_shot
    images = [s["image"] for s in test]
    captions = [s["text"].stored for s in test]
    other_digit = [digit_captions((s["meta"]["label"] + 5) % 10)[0] for s in test]
    matching, wrong = scorer.score(images, captions), scorer.score(images, other_digit)
    assert np.all((0 <= matching) & (matching <= 100))
    assert matching.mean() > wrong.mean() + 10
    assert (matching > wrong).mean() >= 0.7


def test_clip_folder_is_open_clip_local_dir_and_loads_by_architecture_name(trained, tmp_path):
    import open_clip

    root, scorer, _, _ = trained
    folder = root / "clip"
    assert (folder / CLIP_WEIGHTS).is_file() and (folder / CLIP_CONFIG).is_file()
    # A user's CLIP arrives as an architecture name plus a weights file on disk: register ours under a name.
    (tmp_path / "unimask-test-tiny.json").write_text(json.dumps(json.loads((folder / CLIP_CONFIG).read_text())
                                                                ["model_cfg"]))
    open_clip.add_model_config(tmp_path / "unimask-test-tiny.json")
    by_name = ClipScorer.load("unimask-test-tiny", weights=folder / CLIP_WEIGHTS)
    reference = scorer.model.state_dict()
    loaded = by_name.model.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_clip_errors_name_the_fix(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-clip"):
        ClipScorer.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ClipScorer.load("ViT-B-32")
    with pytest.raises(ValueError, match="goes with an architecture name"):
        ClipScorer.load(trained[0] / "clip", weights=trained[0] / "clip" / CLIP_WEIGHTS)
    with pytest.raises(ValueError, match="list_models"):
        ClipScorer.load("no-such-clip-architecture")
    with pytest.raises(ValueError, match="as many images as texts"):
        trained[1].score([np.zeros((8, 8, 3), np.uint8)], [])
    with pytest.raises(ValueError, match="uint8"):
        trained[1].score([np.zeros((8, 8, 3), np.float32)], ["the digit 1"])


def test_undertrained_clip_is_refused(trained, tmp_path):
    root, _, _, test = trained
    pairs = [(s["image"], [s["text"].stored]) for s in test[:64]]
    with pytest.raises(JudgeTooWeakError, match="min_zero_shot"):
        train_clip(pairs, [s["image"] for s in test], [s["meta"]["label"] for s in test], CLASS_PROMPTS,
                   tmp_path / "weak", ClipTrainConfig(epochs=1, min_zero_shot=0.95), progress=False)
