import numpy as np
import pytest
import torch

from unimask.bundle import Bundle, BundleSettings, load_bundle
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.tokenizers.action import BinActionTokenizer
from unimask.tokenizers.text import train_text_tokenizer, vocab_for
from unimask.vocab import VocabError


def make_bundle(action_bins=16):
    tokenizer = train_text_tokenizer(["pick up the cube", "open the drawer"], vocab_size=270)
    actions = BinActionTokenizer(n_bins=action_bins).fit(np.random.default_rng(0).uniform(-1, 1, (50, 4)))
    vocab = vocab_for(tokenizer, action_vocab_size=actions.vocab_size)
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=vocab.size, d_model=32, n_layers=1,
                                                             n_heads=2)).eval()
    settings = BundleSettings(image_tokens=0, action_tokens=8, action_horizon=2, action_dim=4)
    return Bundle(model, vocab, settings, tokenizer, action_tokenizer=actions)


def test_bundle_round_trip(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded.vocab == bundle.vocab and loaded.settings == bundle.settings
    ids = torch.randint(0, bundle.vocab.size, (1, 10))
    assert torch.equal(loaded.model(ids).logits, bundle.model(ids).logits)
    codes = bundle.action_tokenizer.encode(np.zeros((2, 4)))
    assert np.array_equal(loaded.action_tokenizer.encode(np.zeros((2, 4))), codes)


def test_mismatched_parts_refuse_to_load(tmp_path):
    bundle = make_bundle()
    bundle.save(tmp_path)
    BinActionTokenizer(n_bins=8).fit(np.zeros((5, 4)) + np.arange(4)).save_pretrained(tmp_path / "action_tokenizer")
    with pytest.raises(VocabError, match="action_tokenizer has 8 codes but the vocabulary's action_vocab_size is 16"):
        load_bundle(tmp_path)
    (tmp_path / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no vocab.json"):
        load_bundle(tmp_path)
