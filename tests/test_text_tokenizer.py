import numpy as np
import pytest

from unimask.modality import SPECIAL_TOKENS
from unimask.tokenizers.text import TextModality, base_text_size, decode_text, load_text_tokenizer, train_text_tokenizer

CAPTIONS = ["a handwritten seven", "the digit 7", "two red circles left of a blue square", "pick up the cube"]
TEXT = TextModality()


def encode(tokenizer, text: str) -> list[int]:
    return TEXT.encode(tokenizer, [text])[0].tolist()


def test_train_save_load_round_trip(tmp_path):
    tok = train_text_tokenizer(CAPTIONS * 10, vocab_size=300, out_dir=tmp_path / "tok")
    assert base_text_size(tok) == 300 and len(tok) == 300 + len(SPECIAL_TOKENS)
    loaded = load_text_tokenizer(tmp_path / "tok")
    for text in CAPTIONS + ["unseen words: zebra 42!"]:
        ids = encode(loaded, text)
        assert ids == encode(tok, text)
        assert decode_text(loaded, ids) == text
    assert loaded.convert_tokens_to_ids("<|eos|>") == tok.eos_token_id == 301


def test_decode_stops_at_eos():
    tok = train_text_tokenizer(CAPTIONS, vocab_size=270)
    ids = encode(tok, "the digit 7") + [tok.eos_token_id] + encode(tok, "junk") + [tok.pad_token_id]
    assert decode_text(tok, ids) == "the digit 7"
    assert TEXT.decode(tok, np.array([ids])) == ["the digit 7"]


def test_loads_a_foreign_hf_tokenizer_and_appends_specials(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wordlevel = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    wordlevel.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=wordlevel, unk_token="<unk>").save_pretrained(tmp_path)
    tok = load_text_tokenizer(tmp_path)
    assert base_text_size(tok) == 3 and TEXT.vocab_size(tok) == 3
    assert tok.convert_tokens_to_ids("<|pad|>") == 3
    assert encode(tok, "hello world") == [1, 2]


def test_special_token_strings_in_text_are_refused():
    tok = train_text_tokenizer(CAPTIONS, vocab_size=270)
    with pytest.raises(ValueError, match=r"contains the special token string\(s\) \['<\|eos\|>'\]"):
        encode(tok, "the digit <|eos|> 7")
    with pytest.raises(ValueError, match="non-empty string"):
        encode(tok, "   ")


def test_bad_inputs():
    with pytest.raises(ValueError, match="vocab_size"):
        train_text_tokenizer(CAPTIONS, vocab_size=10)
    with pytest.raises(ValueError, match="empty"):
        train_text_tokenizer([], vocab_size=300)
    with pytest.raises(FileNotFoundError):
        load_text_tokenizer("/nonexistent/tokenizer")
