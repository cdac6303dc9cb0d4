"""Adding a modality touches no package file (docs/architecture.md, "Adding a modality"): a toy 1-D integer signal
with its own tokenizer, decoding scheduler, task template and length setting (`sequence.signal_length`) is defined
here, registered, written to shards with the normal writer, trained through the normal loader and training step,
exported, and decoded by the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("webdataset")

from unimask import Modality, Segment, Setting, TaskTemplate, UnifiedPipeline, registry, schedulers  # noqa: E402
from unimask.config import ConfigError  # noqa: E402
from unimask.modality import decode_npy  # noqa: E402
from unimask.processor import SequenceSettings  # noqa: E402
from unimask.schedulers.base import FixedStepScheduler, SchedulerOutput  # noqa: E402

LENGTH, LEVELS = 6, 12


def signal_of(k: int) -> np.ndarray:
    """What the model must learn to write for the prompt "signal k"."""
    return (k * np.arange(1, LENGTH + 1) + k) % LEVELS


class SignalTokenizer:
    """Integer levels are their own codes; the tokenizer only checks and remembers the range. How many values a signal
    has is the modality's `signal_length` setting, not the tokenizer's."""

    def __init__(self, levels: int = LEVELS):
        self.levels = levels

    @property
    def vocab_size(self) -> int:
        return self.levels

    def encode(self, signal) -> np.ndarray:
        signal = np.asarray(signal, dtype=np.int64)
        if signal.ndim != 1 or signal.min() < 0 or signal.max() >= self.levels:
            raise ValueError(f"a signal is a 1-D array of integers in [0, {self.levels}), got {signal}.")
        return signal

    def decode(self, codes) -> np.ndarray:
        return np.asarray(codes, dtype=np.int64)

    def save_pretrained(self, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "signal.json").write_text(json.dumps({"levels": self.levels}))

    @classmethod
    def from_pretrained(cls, directory) -> "SignalTokenizer":
        return cls(**json.loads((Path(directory) / "signal.json").read_text()))


class LeftToRightScheduler(FixedStepScheduler):
    """Commits the leftmost masked positions first, an equal share per step (argmax)."""

    def __init__(self, mask_id: int):
        self.mask_id = mask_id

    def set_timesteps(self, num_steps: int, num_tokens: int) -> None:
        self._start(num_steps, num_tokens)

    def step(self, logits, tokens, generator=None) -> SchedulerOutput:
        self._check_can_step()
        masked = tokens == self.mask_id
        count = -(-self.num_tokens // self.num_steps)
        commit = masked & (masked.long().cumsum(dim=1) <= count)
        new = torch.where(commit, logits.argmax(-1), tokens)
        self.step_index += 1
        return SchedulerOutput(new, commit, torch.zeros(tokens.shape), ~(new == self.mask_id).any(dim=1))


class SignalModality(Modality):
    name = "signal"
    raw_keys = ("signal.npy",)
    codes_key = "signal_codes.npy"
    scheduler = "left-to-right"
    delimiters = ("sos", "eos_signal")  # new special tokens: the vocabulary adds them after the built-in ones
    sequence_settings = (Setting("signal_length", int, 4, "values per signal", minimum=1, maximum=64),)

    def load_tokenizer(self, directory) -> SignalTokenizer:
        return SignalTokenizer.from_pretrained(directory)

    def num_tokens(self, tokenizer, settings) -> int:
        return settings.signal_length

    def encode(self, tokenizer, values, settings) -> list[np.ndarray]:
        codes = super().encode(tokenizer, values, settings)
        wrong = [len(c) for c in codes if len(c) != settings.signal_length]
        if wrong:
            raise ValueError(f"signals have {wrong[0]} values but sequence.signal_length is {settings.signal_length}.")
        return codes

    def read(self, raw, meta) -> np.ndarray:
        return decode_npy(raw["signal.npy"])


@pytest.fixture
def toy(monkeypatch):
    # Private copies of the registries: the test registers through the public calls, and nothing leaks out of it.
    monkeypatch.setattr(registry, "_MODALITIES", registry.modalities())
    monkeypatch.setattr(registry, "_TASKS", registry.tasks())
    monkeypatch.setattr(schedulers, "SCHEDULERS", dict(schedulers.SCHEDULERS))
    schedulers.register_scheduler("left-to-right", LeftToRightScheduler)
    registry.register_modality(SignalModality())
    registry.register_task(TaskTemplate("t2s", (Segment("prompt", "text"),), Segment("signal", "signal")))


def test_a_modality_defined_outside_the_package_trains_exports_and_decodes(toy, tmp_path):
    from unimask.config import from_dict
    from unimask.tokenizers.text import train_text_tokenizer
    from unimask.training.data.format import DatasetWriter, make_sample
    from unimask.training.train_config import TrainConfig
    from unimask.training.trainer import Trainer

    prompts = [f"signal {k}" for k in range(10)]
    with DatasetWriter(tmp_path / "toy", "toy", maxcount=100) as writer:
        for i in range(300):
            k = i % 10
            writer.write("train", make_sample(f"s{i:04d}", text=prompts[k], signal=signal_of(k), meta={"k": k}))
        writer.write("test", make_sample("t0", text=prompts[0], signal=signal_of(0), meta={"k": 0}))
        writer.finish({"source": "toy", "tasks": ["t2s"]})
    train_text_tokenizer(prompts * 5, vocab_size=270, out_dir=tmp_path / "text")
    SignalTokenizer().save_pretrained(tmp_path / "signal")
    config = from_dict(TrainConfig, {
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 32},
        "tokenizers": {"text": str(tmp_path / "text"), "signal": str(tmp_path / "signal")},
        "sequence": {"max_condition_text": 8, "signal_length": LENGTH},
        "data": {"streams": [{"dataset": str(tmp_path / "toy"), "task": "t2s"}], "batch_size": 32, "shuffle_buffer": 64},
        "masking": {"p_uncond": 0.0},
        "optim": {"lr": 3e-3, "warmup": 10},
        "train": {"out": str(tmp_path / "run"), "steps": 150, "log_every": 10, "checkpoint_every": 150,
                  "peak_flops": 1e11}})
    trainer = Trainer(config)
    assert trainer.vocab.size_of("signal") == LEVELS and trainer.vocab.special_id("sos") > trainer.vocab.eos_id
    losses = []
    add = trainer.window.add_micro_batch  # every micro-batch's loss, as the trainer accumulates it
    trainer.window.add_micro_batch = lambda result, *rest: (losses.append(float(result.loss.detach())), add(result, *rest))
    trainer.train()
    assert np.mean(losses[-15:]) < 0.3 * np.mean(losses[:15]), losses
    trainer.export(tmp_path / "bundle")

    pipe = UnifiedPipeline.from_pretrained(tmp_path / "bundle")
    signals = pipe.generate("t2s", {"prompt": prompts}, steps=3)
    assert signals.shape == (10, LENGTH) and signals.dtype == np.int64
    right = np.mean([np.array_equal(s, signal_of(k)) for k, s in enumerate(signals)])
    assert right >= 0.8, (right, signals)


def test_the_toy_modality_s_setting_is_validated_with_its_dotted_key(toy):
    assert SequenceSettings(signal_length=LENGTH).signal_length == LENGTH
    assert SequenceSettings().signal_length == 4  # the declared default
    with pytest.raises(ConfigError, match=r"sequence\.signal_length must be <= 64 \(values per signal\), got 65"):
        SequenceSettings(signal_length=65)
    with pytest.raises(ConfigError, match=r"unknown config key sequence\.signal_lenght;.* signal_length"):
        SequenceSettings(signal_lenght=LENGTH)
    registry.register_modality(type("EchoModality", (SignalModality,), {"name": "echo"})())
    with pytest.raises(ValueError, match="modality 'echo' declares sequence.signal_length, which modality 'signal' "
                                         "declares too"):
        SequenceSettings()
