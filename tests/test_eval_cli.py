"""The evaluation suite's plumbing on a tiny untrained checkpoint: metrics are computed, bounded and written."""

import json

import pytest
import torch

from unimask.bundle import Bundle
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.processor import Processor, SequenceSettings
from unimask.tokenizers.image import VQImageTokenizer, build_vqmodel
from unimask.tokenizers.text import train_text_tokenizer
from unimask.training.data.writers.digits import DIGIT_WORDS, write_digits
from unimask.training.evaluation import suite
from unimask.training.evaluation.cli import evaluate_checkpoint
from unimask.training.data.writers.shapes import write_shapes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_digits(root / "data" / "digits", image_size=32, limit=120)
    write_shapes(root / "data" / "shapes", train=20, test=12, image_size=32)
    torch.manual_seed(0)
    text = train_text_tokenizer([f"the digit {w}" for w in DIGIT_WORDS] * 3, vocab_size=280)
    image = VQImageTokenizer(build_vqmodel(32, (8, 16, 16), latent_channels=4, codebook_size=16, norm_num_groups=4))
    processor = Processor({"text": text, "image": image}, SequenceSettings(caption_length=16))
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=32, n_layers=1,
                                                             n_heads=2))
    Bundle(model, processor).save(root / "model")
    return root


def test_caption_and_shapes_metrics_are_written(setup):
    out = setup / "eval"
    results = evaluate_checkpoint(setup / "model", setup / "data", out, tasks=("caption", "shapes"),
                                  caption_limit=8, shapes_limit=4)
    assert 0.0 <= results["caption"]["digit_accuracy"] <= 1.0 and results["caption"]["n"] == 8
    assert set(results["shapes"]) >= {"all_accuracy", "color_accuracy", "count_accuracy", "position_accuracy"}
    assert (out / "t2i_shapes.png").is_file()
    table = (out / "results.md").read_text()
    assert "| caption | digits | digit_accuracy |" in table
    assert json.loads((out / "results.json").read_text())["caption"]["n"] == 8


def test_eval_cli_rejects_unknown_task(setup, capsys):
    from unimask.cli import main

    assert main(["eval", str(setup / "model"), "--task", "poetry", "--data", str(setup / "data")]) == 2
    assert "error: `--task` must be one of 'caption', 't2i', 'shapes', 'vla', 'clip', 'all', got 'poetry'" in \
        capsys.readouterr().err


def test_clip_task_scores_generated_pairs_beside_references(setup):
    from unimask.training.evaluation.clip import ClipTrainConfig, train_clip

    samples = list(suite.iter_test_samples(setup / "data" / "digits", split="train"))
    train_clip([(s["image"], s["text"].paraphrases) for s in samples], [s["image"] for s in samples[:10]],
               [s["meta"]["label"] for s in samples[:10]], [[w] for w in DIGIT_WORDS], setup / "clip",
               ClipTrainConfig(epochs=1, min_zero_shot=0.0), progress=False)
    out = setup / "eval-clip"
    results = evaluate_checkpoint(setup / "model", setup / "data", out, tasks=("clip",), clip=setup / "clip",
                                  clip_limit=4)
    for name in ("clip", "clip_shapes"):
        scores = {k: v for k, v in results[name].items() if k.endswith("clip_score")}
        assert set(scores) == {"t2i_clip_score", "caption_clip_score", "real_pair_clip_score",
                               "mismatched_pair_clip_score"}
        assert all(0.0 <= v <= 100.0 for v in scores.values()) and results[name]["n"] == 4
    assert "| clip | digits | t2i_clip_score |" in (out / "results.md").read_text()


def test_train_clip_cli_refuses_a_clip_too_weak_to_trust(setup, tmp_path):
    from unimask.cli import main
    from unimask.training.evaluation.judge import JudgeTooWeakError

    with pytest.raises(JudgeTooWeakError, match="zero-shot"):
        main(["eval", "train-clip", "--data", str(setup / "data"), "--out", str(tmp_path / "clip"), "--epochs", "1"])
