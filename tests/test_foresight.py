"""Foresight rows: a vla row that also writes the VQ codes of the frame k steps ahead, denoised in the same pass as the
action chunk. On a toy task (a dot that the actions push left or right), the policy must learn both the actions and
the frame it will see, decode actions with and without imagining the frame, and the exact prefix cache must stay
exact with two target segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minimal_training import train_minimal
from unimask.bundle import Bundle
from unimask.errors import InputError
from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.pipeline import UnifiedPipeline
from unimask.processor import Processor, SequenceSettings
from unimask.sequence import TARGET, collate
from unimask.tokenizers.action import BinActionTokenizer
from unimask.tokenizers.image import VQImageTokenizer, build_vqmodel
from unimask.tokenizers.pixels import PixelPreprocessor
from unimask.tokenizers.text import train_text_tokenizer

SIDE, HORIZON, DIM, STEP = 16, 2, 1, 4


def dot(column: int) -> np.ndarray:
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    image[6:10, column:column + 4] = 255
    return image


def episode(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, chunk, future frame): a dot on the left is pushed right and the other way round."""
    column = int(rng.integers(0, SIDE - 4))
    direction = 1 if column < (SIDE - 4) // 2 else -1
    return dot(column), np.full((HORIZON, DIM), 0.8 * direction, np.float32), dot(column + direction * STEP)


@pytest.fixture(scope="module")
def foresight():
    text = train_text_tokenizer(["push the dot"] * 10, vocab_size=260)
    torch.manual_seed(0)
    vq = VQImageTokenizer(build_vqmodel(SIDE, (8, 8, 8), latent_channels=4, codebook_size=16, norm_num_groups=4))
    actions = BinActionTokenizer(n_bins=9, norm="minmax").fit(np.array([[-1.0], [1.0]]))
    settings = SequenceSettings(caption_length=2, action_horizon=HORIZON, action_dim=DIM,
                                conditions={"vla": {"image": ["pixels"]}}, targets={"vla": ["future"]})
    processor = Processor({"text": text, "image": vq, "action": actions,
                           "pixels": PixelPreprocessor(SIDE, tokens=4)}, settings)
    encoder = {"resolution": SIDE, "tokens": 4, "channels": [16, 32], "shift": 0,
               "id": processor.vocab.range_of("pixels")[0]}
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=64, n_layers=2,
                                                             n_heads=4, max_seq_len=48, encoders={"pixels": encoder}))
    rng = np.random.default_rng(0)

    def batches():
        while True:
            rows = [[frame, "push the dot", None, future, chunk] for frame, chunk, future in
                    (episode(rng) for _ in range(48))]
            yield collate(processor.sequences("vla", rows), processor.vocab.pad_id)

    train_minimal(model, batches(), processor.vocab, steps=250, lr=3e-3,
                  masking=MaskingConfig(p_uncond=0.0, full_mask={"vla": 0.5}), generator=torch.Generator().manual_seed(0))
    return UnifiedPipeline(Bundle(model.eval(), processor, {"action": "linear", "image": "cosine"}))


def test_a_foresight_row_lays_out_the_future_frame_before_the_actions(foresight):
    frame, chunk, future = episode(np.random.default_rng(3))
    sequence = foresight.processor.sequence("vla", [frame, "push the dot", None, future, chunk])
    vocab = foresight.vocab
    target = sequence.input_ids[(sequence.segment_ids == TARGET) & sequence.content_mask]
    image_start, image_stop = vocab.range_of("image")
    codes = foresight.processor.length("image")
    assert ((target[:codes] >= image_start) & (target[:codes] < image_stop)).all()  # the future frame's VQ codes
    assert torch.equal(target[:codes] - image_start, torch.as_tensor(foresight.processor.encode("future", [future])[0]))
    assert ((target[codes:] >= vocab.range_of("action")[0]) & (target[codes:] < vocab.range_of("action")[1])).all()


def test_the_policy_acts_and_imagines_the_frame_it_will_see(foresight):
    rng = np.random.default_rng(7)
    held_out = [episode(rng) for _ in range(40)]
    frames, chunks, futures = zip(*held_out)
    instructions = ["push the dot"] * len(frames)
    out = foresight.act(list(frames), instructions, foresight_steps=3, return_trajectory=True)
    right = np.mean([np.sign(a[0, 0]) == np.sign(c[0, 0]) for a, c in zip(out.outputs, chunks)])
    assert right >= 0.9, right
    imagined = list(out.extra_codes["future"].numpy())
    assert len(out.extras["future"]) == len(frames) and out.extras["future"][0].size == (SIDE, SIDE)  # pictures too
    truth = foresight.processor.encode("future", list(futures))
    current = foresight.processor.encode("future", list(frames))
    match = np.mean([np.array_equal(a, b) for a, b in zip(imagined, truth)])
    copied = np.mean([np.array_equal(a, b) for a, b in zip(current, truth)])
    # Copying the current frame is rarely the future one: the model must move the dot the way it acts.
    assert match >= 0.6 and match >= copied + 0.3, (match, copied)
    without = foresight.act(list(frames), instructions)  # the frame stays masked: actions from the observation alone
    assert np.mean([np.sign(a[0, 0]) == np.sign(c[0, 0]) for a, c in zip(without, chunks)]) >= 0.9


def test_the_prefix_cache_stays_exact_with_two_target_segments(foresight):
    frames = [episode(np.random.default_rng(seed))[0] for seed in range(6)]
    cached = foresight.act(frames, ["push the dot"] * 6, foresight_steps=3, estimate="mode", return_trajectory=True)
    plain = foresight.act(frames, ["push the dot"] * 6, foresight_steps=3, estimate="mode", return_trajectory=True,
                          use_cache=False)
    assert np.array_equal(cached.outputs, plain.outputs)
    assert torch.equal(cached.extra_codes["future"], plain.extra_codes["future"])


def test_foresight_steps_need_a_foresight_checkpoint(foresight):
    with pytest.raises(InputError, match="extra target fields"):
        foresight.generate("vla", {"image": [dot(0)], "instruction": ["push the dot"]}, extra_steps={"caption": 2})
