"""Honest utilisation and a step that never waits for the device: FLOP counts against PyTorch's own counter, the
logged MFU of a run against its FLOPs and time, the time split against the wall clock, and the fused-attention and
compiled steps against the eager one."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer_fixtures import make_setup, write_config
from unimask.config import load_config
from unimask.masking import MaskingConfig, diffusion_step
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.sequence import CONDITION, TARGET, attention_mask_from_segments
from unimask.training.timing import StepTimer
from unimask.training.train_config import TrainConfig
from unimask.training.utilization import mfu, step_flops

ENCODER = {"resolution": 64, "tokens": 16, "channels": [32, 64, 128], "id": 5}


def test_step_flops_match_pytorchs_flop_counter():
    config = MaskedDiffusionConfig(vocab_size=700, d_model=64, n_layers=2, n_heads=4, max_seq_len=128,
                                   encoders={"pixels": ENCODER})
    model = MaskedDiffusionTransformer(config)
    rows, length = 4, 48
    ids = torch.randint(6, 700, (rows, length))
    ids[:3, 1:17] = 5  # three rows read pixels, one does not
    with FlopCounterMode(display=False) as counter:
        model(ids, features={"pixels": torch.randint(0, 255, (rows, 3, 64, 64), dtype=torch.uint8)}).logits.sum() \
            .backward()
    # The CPU attention kernel is not counted by FlopCounterMode: its scores and weighted sums are added by hand,
    # 4 FLOPs per query, key and model dimension forward, twice that backward.
    attention = 12 * config.n_layers * config.d_model * length * length * rows
    assert counter.get_total_flops() + attention == step_flops(config, rows, length, {"pixels": 3})


def test_logged_mfu_is_the_runs_flops_over_its_time_and_the_stated_peak(tmp_path):
    setup = make_setup(tmp_path / "setup")["root"]
    peak = 2e9  # a stated peak (train.peak_flops) low enough that MFU is far from 0 on any machine
    config = load_config(write_config(setup, tmp_path / "run", steps=6, log_every=3), TrainConfig,
                         [f"train.peak_flops={peak}"])
    from unimask.training.trainer import Trainer

    trainer = Trainer(config)
    flops = []
    add = trainer.window.add_micro_batch
    trainer.window.add_micro_batch = lambda result, tokens, f: (flops.append(f), add(result, tokens, f))
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [3, 6]
    for row, window in zip(rows, (flops[:3], flops[3:])):
        achieved = sum(window) / (row["time/step"] * 3)
        assert 0 < row["mfu"] <= 1
        assert row["mfu"] == pytest.approx(min(1.0, achieved / peak), rel=1e-6)
        # The phases cover the step: what they miss (logging, bookkeeping) is a small remainder.
        parts = row["time/data"] + row["time/forward"] + row["time/backward"] + row["time/optimizer"]
        assert parts + row["time/other"] == pytest.approx(row["time/step"], rel=1e-9)
        assert 0 <= row["time/other"] < 0.25 * row["time/step"], row
    assert mfu(3e12, 1e12) == 1.0 and mfu(1e9, 4e9) == 0.25


def test_step_timer_splits_host_time_by_phase():
    import time

    timer = StepTimer("cpu")
    for _ in range(2):
        timer.start()
        time.sleep(0.01)
        timer.mark("data")
        time.sleep(0.02)
        timer.mark("forward")
        time.sleep(0.03)
        timer.mark("backward")
        timer.mark("optimizer")
    split = timer.split(2)
    assert split["time/data"] == pytest.approx(0.01, abs=0.005)
    assert split["time/forward"] == pytest.approx(0.02, abs=0.005)
    assert split["time/backward"] == pytest.approx(0.03, abs=0.005)
    assert split["time/step"] == pytest.approx(sum(v for k, v in split.items() if k != "time/step"), rel=1e-9)


def _segments(rows: int, length: int) -> torch.Tensor:
    """Rows of a condition, a target and right padding of different lengths."""
    segments = torch.zeros(rows, length, dtype=torch.long)
    for row in range(rows):
        condition, target = 5 + 3 * row, 20 + row
        segments[row, :condition] = CONDITION
        segments[row, condition:condition + target] = TARGET
    return segments


@pytest.mark.parametrize("mode", ["prefix", "full"])
def test_flex_and_math_attention_equal_the_masked_sdpa_path(mode):
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4,
                                                             n_kv_heads=2, max_seq_len=64, attention=mode)).eval()
    ids, segments = torch.randint(0, 100, (3, 40)), _segments(3, 40)
    with torch.no_grad():  # flex attention has no CPU backward; training uses it on CUDA only
        reference = model(ids, segment_ids=segments).logits
        model.attention_kernel = "flex"
        flex = model(ids, segment_ids=segments).logits
    valid = segments != 0
    torch.testing.assert_close(flex[valid], reference[valid], atol=1e-4, rtol=1e-4)
    model.attention_kernel = "math"
    math_logits = model(ids, segment_ids=segments).logits
    math_logits[valid].square().sum().backward()  # the CPU training path, gradients included
    torch.testing.assert_close(math_logits[valid].detach(), reference[valid], atol=1e-5, rtol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.blocks.parameters())
    mask = attention_mask_from_segments(segments, segments, mode)
    assert mask.any(-1).all()  # every query sees something, so no row of either path is undefined


def test_compiled_step_gives_the_eager_loss():
    from unimask.registry import get_task
    from unimask.sequence import SequenceBuilder, collate
    from unimask.registry import get_modality
    from unimask.vocab import UnifiedVocab

    vocab = UnifiedVocab(text_size=64, modalities={"image": 32})
    builder = SequenceBuilder(vocab, {n: get_modality(n) for n in ("text", "image")}, {"image": 16},
                              caption_length=8, max_condition_text=8)
    g = torch.Generator().manual_seed(0)
    batch = collate([builder.build(get_task("t2i"), [torch.randint(0, 64, (5,), generator=g),
                                                     torch.randint(0, 32, (16,), generator=g)]) for _ in range(4)],
                    vocab.pad_id, pad_to_multiple_of=8)
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=vocab.size, d_model=32, n_layers=2, n_heads=4,
                                                             max_seq_len=64))
    eager = diffusion_step(model, batch, vocab, MaskingConfig(), torch.Generator().manual_seed(1)).loss
    model.compile()
    compiled = diffusion_step(model, batch, vocab, MaskingConfig(), torch.Generator().manual_seed(1)).loss
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
