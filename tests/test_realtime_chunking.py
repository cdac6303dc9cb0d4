"""Real-time chunking: the actions executed while a chunk is computed are frozen as its start and only the rest is
unmasked (exact conditioning), and the closed-loop rollout simulates the inference delay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from minimal_training import train_minimal  # noqa: E402
from unimask.bundle import Bundle  # noqa: E402
from unimask.errors import InputError  # noqa: E402
from unimask.masking import MaskingConfig  # noqa: E402
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer  # noqa: E402
from unimask.pipeline import UnifiedPipeline  # noqa: E402
from unimask.processor import Processor, SequenceSettings  # noqa: E402
from unimask.registry import get_modality  # noqa: E402
from unimask.sequence import collate  # noqa: E402
from unimask.tokenizers.action import BinActionTokenizer, FASTActionTokenizer  # noqa: E402
from unimask.tokenizers.pixels import PixelPreprocessor  # noqa: E402
from unimask.tokenizers.text import train_text_tokenizer  # noqa: E402
from unimask.training.evaluation.robot import rollout  # noqa: E402

SIDE, HORIZON, DIM, LEVEL = 16, 4, 2, 0.7


def frame(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)  # says nothing about the action


@pytest.fixture(scope="module")
def two_way_pipeline():
    """A policy whose chunks go all +LEVEL or all -LEVEL, half the time each, whatever it sees: only the executed
    start of a chunk can say which way the rest goes."""
    text = train_text_tokenizer(["go"] * 10, vocab_size=260)
    actions = BinActionTokenizer(n_bins=15, norm="minmax").fit(np.array([[-1.0, -1.0], [1.0, 1.0]]))
    settings = SequenceSettings(caption_length=2, action_horizon=HORIZON, action_dim=DIM,
                                conditions={"vla": {"image": ["pixels"]}})
    processor = Processor({"text": text, "action": actions, "pixels": PixelPreprocessor(SIDE, tokens=4)}, settings)
    torch.manual_seed(0)
    encoder = {"resolution": SIDE, "tokens": 4, "channels": [8, 16], "shift": 0,
               "id": processor.vocab.range_of("pixels")[0]}
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=64, n_layers=2,
                                                             n_heads=4, max_seq_len=32, encoders={"pixels": encoder}))
    rng = np.random.default_rng(0)

    def batches():
        while True:
            signs = rng.choice([-1.0, 1.0], 48)
            rows = [[frame(rng), "go", None, np.full((HORIZON, DIM), sign * LEVEL, np.float32)] for sign in signs]
            yield collate(processor.sequences("vla", rows), processor.vocab.pad_id)

    train_minimal(model, batches(), processor.vocab, steps=150, lr=3e-3, masking=MaskingConfig(p_uncond=0.0),
                  generator=torch.Generator().manual_seed(0))
    return UnifiedPipeline(Bundle(model.eval(), processor, {"action": "linear"}))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_inpainting_continues_the_executed_actions(two_way_pipeline, sign):
    # Both signs must be followed: a model that ignored the frozen start would go the same way in both.
    rng = np.random.default_rng(1)
    executed = np.full((64, 1, DIM), sign * LEVEL, np.float32)
    chunks = two_way_pipeline.act([frame(rng) for _ in range(64)], ["go"] * 64, steps=2, executed=executed)
    tokenizer = two_way_pipeline.processor.tokenizers["action"]
    assert np.array_equal(chunks[:, :1], tokenizer.decode(tokenizer.encode(executed)))  # frozen, as quantised
    follows = (np.abs(chunks[:, 1:] - sign * LEVEL) < tokenizer.bin_width).all(axis=(1, 2))
    assert follows.mean() >= 0.9, f"{follows.mean():.2f} of chunks continue the executed actions"


def test_executed_actions_are_checked(two_way_pipeline):
    pipe, image = two_way_pipeline, [frame(np.random.default_rng(2))]
    for bad, match in [(np.zeros((1, HORIZON, DIM)), "1 <= d < 4"), (np.zeros((1, 1, DIM + 1)), r"\(1, d, 2\)"),
                       (np.zeros((2, 1, DIM)), r"\(1, d, 2\)"), (np.full((1, 1, DIM), np.nan), "NaN"),
                       ([["a", "b"]], "array of numbers")]:
        with pytest.raises(InputError, match=match):
            pipe.act(image, ["go"], executed=bad)
    with pytest.raises(InputError, match="bins tokenizer"):
        get_modality("action").prefix_codes(FASTActionTokenizer(), np.zeros((1, 1, DIM)))


class CountingEnv:
    """Records the actions it is given; a chunk's action t of call c is (c, t, 0, 0)."""

    task = "count"

    def __init__(self, max_steps: int):
        import gymnasium

        self.action_space = gymnasium.spaces.Box(-100, 100, (4,), np.float32)
        self.max_steps, self.actions = max_steps, []

    def observation(self):
        return {"observation.image": np.zeros((2, 2, 3), np.uint8), "steps": len(self.actions)}

    def reset(self, seed=None):
        self.actions = []
        return self.observation(), {}

    def step(self, action):
        self.actions.append((int(action[0]), int(action[1])))
        return self.observation(), 0.0, False, len(self.actions) >= self.max_steps, {}


def counting_policy(calls: list, seen: list | None = None):
    def policy(obs, executed=None):
        calls.append(None if executed is None else executed.copy())
        if seen is not None:
            seen.append(obs["steps"])
        return np.array([[len(calls) - 1, t, 0, 0] for t in range(8)], np.float32)

    return policy


def test_delayed_rollout_executes_the_old_chunk_during_inference_then_the_new_one_from_the_delay():
    env, calls, seen = CountingEnv(max_steps=10), [], []
    result = rollout(counting_policy(calls, seen), env, seed=0, execute_steps=2, delay=2, inpaint=True)
    assert seen == [0, 2, 6]  # each chunk is planned from the frame before the delay's actions run
    assert env.actions == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4), (1, 5), (2, 2), (2, 3)]
    assert calls[0] is None and calls[1][:, 1].tolist() == [2, 3] and calls[2][:, :2].tolist() == [[1, 4], [1, 5]]
    assert result.steps == 10 and len(result.boundary_jumps) == 2  # (0,3) -> (1,2) and (1,5) -> (2,2)
    assert result.boundary_jumps[0] == pytest.approx(np.hypot(1, 1)) and set(result.action_changes) == {1.0}
    env, calls = CountingEnv(max_steps=5), []
    rollout(counting_policy(calls), env, seed=0, execute_steps=3)
    assert env.actions == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)] and calls == [None, None]
