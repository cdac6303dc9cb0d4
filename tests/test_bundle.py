import hashlib
import json

import numpy as np
import pytest
import torch

from tiny_bundle import make_tiny_bundle, reseal
from unimask.bundle import Bundle, load_bundle
from unimask.errors import InputError
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.processor import Processor, SequenceSettings
from unimask.tokenizers.action import BinActionTokenizer
from unimask.tokenizers.text import train_text_tokenizer
from unimask.vocab import VocabError


def make_bundle(action_bins=16):
    tokenizer = train_text_tokenizer(["pick up the cube", "open the drawer"], vocab_size=270)
    actions = BinActionTokenizer(n_bins=action_bins).fit(np.random.default_rng(0).uniform(-1, 1, (50, 4)))
    processor = Processor({"text": tokenizer, "action": actions}, SequenceSettings(action_horizon=2, action_dim=4))
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=32, n_layers=1,
                                                             n_heads=2)).eval()
    return Bundle(model, processor, {"text": "linear", "action": "linear"})


def test_bundle_round_trip(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded.vocab == bundle.vocab and loaded.processor.settings == bundle.processor.settings
    assert loaded.mask_schedules == bundle.mask_schedules and loaded.decoding == bundle.decoding
    ids = torch.randint(0, bundle.vocab.size, (1, 10))
    assert torch.equal(loaded.model(ids).logits, bundle.model(ids).logits)
    chunks = np.zeros((2, 2, 4))
    assert np.array_equal(loaded.processor.encode("action", chunks), bundle.processor.encode("action", chunks))


def test_the_bundle_records_the_image_mask_schedule_for_decoding(tmp_path):
    folder = make_tiny_bundle(tmp_path / "tiny")
    settings = json.loads((folder / "unimask.json").read_text())
    settings["mask_schedules"]["image"] = "pow2"
    settings["decoding"] = {}
    (folder / "unimask.json").write_text(json.dumps(settings))
    assert load_bundle(reseal(folder)).decoding["image"] == {"schedule": "pow2"}


def test_mismatched_parts_refuse_to_load(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path)
    BinActionTokenizer(n_bins=8).fit(np.zeros((5, 4)) + np.arange(4)).save_pretrained(tmp_path / "action_tokenizer")
    reseal(tmp_path)
    with pytest.raises(VocabError, match="the action tokenizer has 8 codes but the vocabulary has 16 action ids"):
        load_bundle(tmp_path)
    (tmp_path / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no vocab.json"):
        load_bundle(tmp_path)


def test_the_bundle_saves_the_sequence_settings_of_its_own_modalities(tmp_path):
    from unimask.config import ConfigError

    tokenizer = train_text_tokenizer(["pick up the cube", "open the drawer"], vocab_size=270)
    processor = Processor({"text": tokenizer}, SequenceSettings(caption_length=12, action_horizon=2))
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=32, n_layers=1,
                                                             n_heads=2))
    Bundle(model, processor).save(tmp_path)
    saved = json.loads((tmp_path / "unimask.json").read_text())["sequence"]
    # A text-only model: the action settings mean nothing to it and are not written.
    assert saved == {"caption_length": 12, "max_condition_text": 64, "conditions": None, "targets": None}
    assert load_bundle(tmp_path).processor.settings.caption_length == 12

    settings = json.loads((tmp_path / "unimask.json").read_text())
    settings["sequence"]["signal_length"] = 6  # written by a process that had registered such a modality
    (tmp_path / "unimask.json").write_text(json.dumps(settings))
    checksums = json.loads((tmp_path / "checksums.json").read_text())  # as that process's export would have
    checksums["sha256"]["unimask.json"] = hashlib.sha256((tmp_path / "unimask.json").read_bytes()).hexdigest()
    (tmp_path / "checksums.json").write_text(json.dumps(checksums))
    with pytest.raises(ConfigError, match="unknown config key sequence.signal_length.*once that modality is registered"):
        load_bundle(tmp_path)


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "action_tokenizer/action_tokenizer.json", "unimask.json"])
def test_a_flipped_byte_is_refused_naming_the_file(tmp_path, name):
    make_bundle().save(tmp_path)
    target = tmp_path / name
    if not target.is_file():  # the tokenizer's settings file: whichever json the folder holds
        target = sorted((tmp_path / "action_tokenizer").glob("*.json"))[0]
        name = f"action_tokenizer/{target.name}"
    flip_byte(target, offset=len(target.read_bytes()) - 3)
    with pytest.raises(InputError, match=rf"{name} in .* changed since export"):
        load_bundle(tmp_path)


def test_nan_weights_are_refused_naming_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    make_bundle().save(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["blocks.0.attn.q_proj.weight"][0, 0] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="changed since export"):
        load_bundle(tmp_path)
    with pytest.raises(InputError, match=r"model.safetensors holds NaN or infinite weights \(blocks.0.attn.q_proj"):
        load_bundle(reseal(tmp_path))


def test_settings_that_do_not_fit_the_model_are_refused(tmp_path):
    folder = make_tiny_bundle(tmp_path / "tiny")
    settings = json.loads((folder / "unimask.json").read_text())
    settings["tasks"] = ["vla", "t2i"]
    (folder / "unimask.json").write_text(json.dumps(settings))
    assert load_bundle(reseal(folder)).tasks == ["vla", "t2i"]  # the trained tasks fit: it loads
    settings["sequence"]["action_horizon"] = 100  # 400 action codes: no longer a sequence this model takes
    (folder / "unimask.json").write_text(json.dumps(settings))
    with pytest.raises(InputError, match="unimask.json in .* changed since export"):
        load_bundle(folder)
    with pytest.raises(InputError, match=r"trained on vla sequences.*action_horizon=100.*more than its max_seq_len "
                                         r"of 512"):
        load_bundle(reseal(folder))


def test_a_moved_bundle_loads_and_one_without_checksums_warns(tmp_path, monkeypatch):
    make_bundle().save(tmp_path / "here")
    (tmp_path / "here").rename(tmp_path / "there")
    monkeypatch.chdir(tmp_path / "there" / "action_tokenizer")
    assert load_bundle(tmp_path / "there").processor.settings.action_horizon == 2
    (tmp_path / "there" / "checksums.json").unlink()
    with pytest.warns(UserWarning, match="has no checksums.json"):
        load_bundle(tmp_path / "there")
