import pytest
import torch

from unimask.modality import SPECIAL_TOKENS
from unimask.vocab import UnifiedVocab, VocabError


def test_ranges_are_contiguous_and_disjoint(small_vocab):
    v = small_vocab
    spans = [v.range_of(name) for name in v.modality_names]
    assert v.modality_names == ("text", "special", "image", "action", "state", "mask")
    assert spans[0][0] == 0 and spans[-1][1] == v.size
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop == start
    assert v.size == 40 + len(SPECIAL_TOKENS) + 16 + 12 + 5 + 1
    assert v.mask_id == v.size - 1


def test_code_id_round_trips_and_modality_of(small_vocab):
    v = small_vocab
    codes = torch.arange(16)
    ids = v.to_id("image", codes)
    assert torch.equal(v.from_id("image", ids), codes)
    assert (v.modality_of(ids) == v.modality_index("image")).all()
    assert (v.modality_of(v.to_id("action", torch.arange(12))) == v.modality_index("action")).all()
    assert (v.modality_of(v.to_id("state", torch.arange(5))) == v.modality_index("state")).all()
    assert int(v.modality_of(torch.tensor(v.mask_id))) == v.modality_index("mask")
    assert int(v.modality_of(torch.tensor(v.eos_id))) == v.modality_index("special")
    assert int(v.modality_of(torch.tensor(39))) == v.modality_index("text")


def test_out_of_range_codes_and_ids_raise(small_vocab):
    with pytest.raises(VocabError, match=r"image codes must lie in \[0, 16\)"):
        small_vocab.to_id("image", torch.tensor([16]))
    with pytest.raises(VocabError, match="action ids"):
        small_vocab.from_id("action", torch.tensor([0]))
    with pytest.raises(VocabError, match="token ids must lie"):
        small_vocab.modality_of(torch.tensor([small_vocab.size]))
    with pytest.raises(VocabError, match="no 'audio' ids"):
        small_vocab.range_of("audio")


def test_bad_layouts_raise():
    with pytest.raises(VocabError, match="text_size"):
        UnifiedVocab(text_size=0, modalities={"image": 4})
    with pytest.raises(VocabError, match="modality 'image' must have an integer number of ids >= 1"):
        UnifiedVocab(text_size=10, modalities={"image": -1})
    with pytest.raises(VocabError, match="not text/special/mask"):
        UnifiedVocab(text_size=10, modalities={"mask": 3})
    with pytest.raises(VocabError, match="duplicates"):
        UnifiedVocab(10, {"image": 4}, special_tokens=SPECIAL_TOKENS + ("<|pad|>",))
    with pytest.raises(VocabError, match="must start with"):
        UnifiedVocab(10, {"image": 4}, special_tokens=SPECIAL_TOKENS[::-1])


def test_tokens_a_task_adds_follow_the_base_specials():
    v = UnifiedVocab(10, {"signal": 7}, special_tokens=SPECIAL_TOKENS + ("<|t2s|>",))
    assert v.special_id("t2s") == 10 + len(SPECIAL_TOKENS)
    assert v.range_of("signal") == (11 + len(SPECIAL_TOKENS), 18 + len(SPECIAL_TOKENS))


def test_allowed_mask(small_vocab):
    v = small_vocab
    text = v.allowed_mask("text", ("eos", "pad"))
    assert text[:40].all() and text[v.eos_id] and text[v.pad_id] and int(text.sum()) == 42
    image = v.allowed_mask("image")
    assert int(image.sum()) == 16 and not image[v.mask_id]


def test_save_load_and_size_validation(tmp_path, small_vocab):
    small_vocab.save(tmp_path)
    loaded = UnifiedVocab.load(tmp_path)
    assert loaded == small_vocab
    loaded.validate_size("image", 16)
    with pytest.raises(VocabError, match="the image tokenizer has 32 codes but the vocabulary has 16 image ids"):
        loaded.validate_size("image", 32)
    with pytest.raises(VocabError, match="no vocab.json"):
        UnifiedVocab.load(tmp_path / "missing")
    (tmp_path / "vocab.json").write_text('{"text_size": 40, "image_codebook_size": 16}')
    with pytest.raises(VocabError, match="written by another unimask version"):
        UnifiedVocab.load(tmp_path)


def test_text_tokenizer_agreement():
    from unimask.processor import Processor, SequenceSettings
    from unimask.tokenizers.text import train_text_tokenizer

    tok = train_text_tokenizer(["the digit seven", "a red square"] * 5, vocab_size=280)
    vocab = Processor({"text": tok}, SequenceSettings()).vocab
    vocab.validate_text_tokenizer(tok)
    for token in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(token) == vocab.special_id(token)
    wrong = UnifiedVocab(vocab.text_size + 1, {"image": 8})
    with pytest.raises(VocabError, match="the text tokenizer has .* tokens but this vocabulary expects"):
        wrong.validate_text_tokenizer(tok)
