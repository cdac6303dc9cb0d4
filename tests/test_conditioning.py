"""Conditions that learn: a pixel-encoder condition (decoupled from the VQ codes), and an objective that trains what
decoding does (whole-target masking, per-task condition dropout, several masked copies of a target per condition)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minimal_training import train_minimal
from unimask.bundle import Bundle, load_bundle
from unimask.masking import MaskingConfig, forward_process
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.pipeline import UnifiedPipeline
from unimask.processor import Processor, SequenceSettings
from unimask.sequence import TARGET, collate, repeat_targets
from unimask.tokenizers.action import BinActionTokenizer
from unimask.tokenizers.pixels import PixelPreprocessor
from unimask.tokenizers.text import train_text_tokenizer

SIDE, HORIZON, DIM = 32, 2, 2
QUADRANT_ACTIONS = np.array([[-0.8, 0.8], [0.8, 0.8], [-0.8, -0.8], [0.8, -0.8]], dtype=np.float32)


def quadrant_image(quadrant: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy frame with a bright square in one quadrant: only the pixels say which."""
    image = rng.integers(0, 60, (SIDE, SIDE, 3), dtype=np.uint8)
    top, left = divmod(quadrant, 2)
    y, x = top * 16 + int(rng.integers(2, 6)), left * 16 + int(rng.integers(2, 6))
    image[y:y + 8, x:x + 8] = (250, 250, 90)
    return image


@pytest.fixture(scope="module")
def processor():
    text = train_text_tokenizer(["move to the square", "go"] * 5, vocab_size=270)
    actions = BinActionTokenizer(n_bins=16, norm="minmax").fit(np.array([[-1.0, -1.0], [1.0, 1.0]]))
    settings = SequenceSettings(caption_length=4, action_horizon=HORIZON, action_dim=DIM,
                                conditions={"vla": {"image": ["pixels"]}})
    return Processor({"text": text, "action": actions, "pixels": PixelPreprocessor(SIDE, tokens=4)}, settings)


def pixel_model(processor, seed: int = 0) -> MaskedDiffusionTransformer:
    torch.manual_seed(seed)
    encoder = {"resolution": SIDE, "tokens": 4, "channels": [16, 32], "shift": 2,
               "id": processor.vocab.range_of("pixels")[0]}
    return MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=64, n_layers=2,
                                                            n_heads=4, max_seq_len=64, encoders={"pixels": encoder}))


def batches(processor, rng, size=48):
    while True:
        quadrants = rng.integers(0, 4, size)
        rows = [[quadrant_image(q, rng), "move to the square", None, np.repeat(QUADRANT_ACTIONS[q][None], HORIZON, 0)]
                for q in quadrants]
        yield collate(processor.sequences("vla", rows), processor.vocab.pad_id)


def test_a_pixel_condition_learns_what_only_the_pixels_say(processor, tmp_path):
    model = pixel_model(processor)
    rng = np.random.default_rng(0)
    result = train_minimal(model, batches(processor, rng), processor.vocab, steps=250, lr=3e-3,
                           masking=MaskingConfig(p_uncond=0.0, full_mask={"vla": 0.3}),
                           generator=torch.Generator().manual_seed(0),
                           stop_when=lambda step, loss: step > 60 and loss < 0.02)
    assert result.losses[-1] < 0.2 * result.losses[0], result.losses[::10]
    pipe = UnifiedPipeline(Bundle(model.eval(), processor, {"action": "linear"}))
    test = np.random.default_rng(1)
    quadrants = test.integers(0, 4, 64)
    actions = pipe.act([quadrant_image(q, test) for q in quadrants], ["move to the square"] * 64, steps=1)
    right = np.abs(actions - QUADRANT_ACTIONS[quadrants][:, None]).max(axis=(1, 2)) < 0.2
    assert right.mean() >= 0.9, f"{right.mean():.2f} of chunks right after {result.steps} steps"


def test_pixel_bundles_round_trip_and_the_prefix_cache_is_exact(processor, tmp_path):
    model = pixel_model(processor, seed=3).eval()
    Bundle(model, processor, {"action": "linear"}).save(tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key]), key
    assert loaded.processor.tokenizers["pixels"].resolution == SIDE and loaded.vocab == processor.vocab
    pipe = UnifiedPipeline(loaded)
    rng = np.random.default_rng(5)
    frames = [quadrant_image(q, rng) for q in range(4)]
    cached = pipe.act(frames, ["go"] * 4, steps=2, return_trajectory=True, use_cache=True)
    uncached = pipe.act(frames, ["go"] * 4, steps=2, return_trajectory=True, use_cache=False)
    assert torch.equal(cached.codes, uncached.codes)
    assert np.array_equal(UnifiedPipeline(Bundle(model, processor, {"action": "linear"})).act(frames, ["go"] * 4,
                                                                                             steps=2),
                          cached.outputs)


def test_target_copies_are_exactly_one_target_sequences(processor):
    """Each copy attends to the condition and to itself only: its logits equal those of its own sequence."""
    model = pixel_model(processor, seed=1).eval()
    rng = np.random.default_rng(2)
    batch = next(batches(processor, rng, size=3))
    copies = repeat_targets(batch, torch.tensor([3, 1, 2]))
    assert copies.segment_ids.max() == TARGET + 2
    noisy = forward_process(copies, processor.vocab, MaskingConfig(p_uncond=0.0), torch.Generator().manual_seed(0))
    with torch.no_grad():
        together = model(noisy.input_ids, segment_ids=copies.segment_ids, position_ids=copies.position_ids,
                         features=copies.features).logits
        for row in range(3):
            condition = copies.segment_ids[row] == 1
            for copy in range(int(copies.segment_ids[row].max()) - 1):
                target = copies.segment_ids[row] == TARGET + copy
                keep = condition | target
                ids = noisy.input_ids[row][keep][None]
                segments = torch.where(copies.segment_ids[row][keep] > 1, TARGET, 1)[None]
                alone = model(ids, segment_ids=segments, position_ids=copies.position_ids[row][keep][None],
                              features={k: v[row:row + 1] for k, v in copies.features.items()}).logits[0]
                torch.testing.assert_close(together[row][target], alone[segments[0] == TARGET], atol=1e-5, rtol=1e-5)


def test_tasks_with_and_without_a_pixel_condition_share_a_batch(processor):
    """A training batch mixes task layouts: a row without pixels (lm here, t2i in the quickstart) gets zero
    features that are never read, and each row's logits equal those it gets in a batch of its own."""
    model = pixel_model(processor, seed=2).eval()
    rng = np.random.default_rng(3)
    vla = processor.sequences("vla", [[quadrant_image(1, rng), "go", None, np.zeros((HORIZON, DIM), np.float32)]])[0]
    text = processor.sequences("lm", [["go"]])[0]
    mixed = collate([text, vla], processor.vocab.pad_id)
    assert torch.equal(mixed.features["pixels"][0], torch.zeros_like(mixed.features["pixels"][1]))
    with torch.no_grad():
        together = model(mixed.input_ids, segment_ids=mixed.segment_ids, position_ids=mixed.position_ids,
                         features=mixed.features).logits
        for row, sequence in enumerate((text, vla)):
            alone = collate([sequence], processor.vocab.pad_id)
            logits = model(alone.input_ids, segment_ids=alone.segment_ids, position_ids=alone.position_ids,
                           features=alone.features).logits[0]
            torch.testing.assert_close(together[row, :len(logits)], logits, atol=1e-5, rtol=1e-5)


def test_whole_target_masking_and_per_task_condition_dropout(processor):
    rng = np.random.default_rng(3)
    batch = next(batches(processor, rng, size=400))
    config = MaskingConfig(p_uncond=0.5, condition_dropout={"vla": 0.0}, full_mask={"vla": 0.5},
                           target_copies={"vla": 2})
    out = forward_process(batch, processor.vocab, config, torch.Generator().manual_seed(4))
    assert not out.condition_dropped.any()
    whole = []
    for row in range(len(out.clean)):
        for copy in (0, 1):
            target = out.clean.target_mask[row] & (out.clean.segment_ids[row] == TARGET + copy)
            whole.append(bool(out.masked[row][target].all()))
            if float(out.t[row, copy]) == 1.0:
                assert whole[-1] and torch.all(out.p_mask[row][target] == 1.0)
    assert 0.45 < np.mean(whole) < 0.6  # 50% forced, plus the few uniform draws that mask everything
    with pytest.raises(ValueError, match="target_copies"):
        MaskingConfig(target_copies={"vla": 0})
    with pytest.raises(ValueError, match="`full_mask` must be one of 't2i', 'i2t', 'vla', 'lm', got 'caption'"):
        MaskingConfig(full_mask={"caption": 0.2})
