import json

import numpy as np
import pytest
import torch

from tiny_bundle import make_tiny_bundle, reseal
from unimask.bundle import Bundle, load_bundle
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
