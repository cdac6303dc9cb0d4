import pytest
import torch

from unimask.vocab import SPECIAL_TOKENS, Modality, UnifiedVocab, VocabError


def test_ranges_are_contiguous_and_disjoint(small_vocab):
    v = small_vocab
    spans = [v.range_of(m) for m in Modality]
    assert spans[0][0] == 0 and spans[-1][1] == v.size
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop == start
    assert v.size == 40 + len(SPECIAL_TOKENS) + 16 + 12 + 5 + 1
    assert v.mask_id == v.size - 1


def test_code_id_round_trips_and_modality_of(small_vocab):
    v = small_vocab
    codes = torch.arange(16)
    ids = v.image_to_id(codes)
    assert torch.equal(v.id_to_image(ids), codes)
    assert (v.modality_of(ids) == Modality.IMAGE).all()
    assert (v.modality_of(v.action_to_id(torch.arange(12))) == Modality.ACTION).all()
    assert (v.modality_of(v.state_to_id(torch.arange(5))) == Modality.STATE).all()
    assert int(v.modality_of(torch.tensor(v.mask_id))) == Modality.MASK
    assert int(v.modality_of(torch.tensor(v.eos_id))) == Modality.SPECIAL
    assert int(v.modality_of(torch.tensor(39))) == Modality.TEXT


def test_out_of_range_codes_and_ids_raise(small_vocab):
    with pytest.raises(VocabError, match=r"image codes must lie in \[0, 16\)"):
        small_vocab.image_to_id(torch.tensor([16]))
    with pytest.raises(VocabError, match="action ids"):
        small_vocab.id_to_action(torch.tensor([0]))
    with pytest.raises(VocabError, match="token ids must lie"):
        small_vocab.modality_of(torch.tensor([small_vocab.size]))


def test_bad_layouts_raise():
    with pytest.raises(VocabError, match="text_size"):
        UnifiedVocab(text_size=0, image_codebook_size=4, action_vocab_size=4)
    with pytest.raises(VocabError, match="image_codebook_size"):
        UnifiedVocab(text_size=10, image_codebook_size=-1, action_vocab_size=4)
    with pytest.raises(VocabError, match="duplicates"):
        UnifiedVocab(10, 4, 4, special_tokens=SPECIAL_TOKENS + ("<|pad|>",))


def test_allowed_mask(small_vocab):
    v = small_vocab
    text = v.allowed_mask(Modality.TEXT)
    assert text[:40].all() and text[v.eos_id] and text[v.pad_id] and int(text.sum()) == 42
    image = v.allowed_mask(Modality.IMAGE)
    assert int(image.sum()) == 16 and not image[v.mask_id]


def test_save_load_and_size_validation(tmp_path, small_vocab):
    small_vocab.save(tmp_path)
    loaded = UnifiedVocab.load(tmp_path)
    assert loaded == small_vocab
    loaded.validate_sizes(image_codebook_size=16, action_vocab_size=12)
    with pytest.raises(VocabError, match="image_codebook_size is 16 in the vocabulary but the tokenizer has 32"):
        loaded.validate_sizes(image_codebook_size=32)
    with pytest.raises(VocabError, match="no vocab.json"):
        UnifiedVocab.load(tmp_path / "missing")


def test_text_tokenizer_agreement():
    from unimask.tokenizers.text import train_text_tokenizer, vocab_for

    tok = train_text_tokenizer(["the digit seven", "a red square"] * 5, vocab_size=280)
    vocab = vocab_for(tok, image_codebook_size=8, action_vocab_size=4)
    vocab.validate_text_tokenizer(tok)
    for token in SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(token) == vocab.special_id(token)
    wrong = UnifiedVocab(vocab.text_size + 1, 8, 4)
    with pytest.raises(VocabError, match="the text tokenizer has .* tokens but this vocabulary expects"):
        wrong.validate_text_tokenizer(tok)
