import pytest
import torch

from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from template_builder import TemplateBuilder
from unimask.sequence import collate


def tiny_model(vocab_size, attention="prefix", **kw):
    torch.manual_seed(0)
    cfg = MaskedDiffusionConfig(vocab_size=vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                max_seq_len=64, attention=attention, **kw)
    return MaskedDiffusionTransformer(cfg).eval()


@pytest.fixture
def batch(small_vocab):
    b = TemplateBuilder(small_vocab, caption_length=6, image_tokens=4, action_tokens=3, state_tokens=2)
    seqs = [b.vla([0, 1, 2, 3], [9], [1, 2, 3]), b.vla([3, 2, 1, 0], [4, 5, 6], [0, 0, 1], state_codes=[2, 1])]
    return collate(seqs, pad_id=small_vocab.pad_id)


def test_logits_shape_and_bad_input(small_vocab, batch):
    model = tiny_model(small_vocab.size)
    out = model(batch.input_ids, segment_ids=batch.segment_ids, position_ids=batch.position_ids)
    assert out.logits.shape == (2, batch.input_ids.shape[1], small_vocab.size)
    assert model(batch.input_ids).logits.shape == out.logits.shape  # plain model(input_ids) works too
    with pytest.raises(ValueError, match=r"`input_ids` must lie in \[0, "):
        model(torch.tensor([[small_vocab.size]]))
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_config_errors_name_values():
    with pytest.raises(ValueError, match=r"`d_model` \(30\) must be divisible by `n_heads` \(4\)"):
        MaskedDiffusionConfig(vocab_size=10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="`attention` must be"):
        MaskedDiffusionConfig(vocab_size=10, attention="causal")


def test_condition_hidden_states_ignore_the_target(small_vocab, batch):
    model = tiny_model(small_vocab.size)
    target = batch.target_mask
    changed = batch.input_ids.clone()
    changed[target] = small_vocab.mask_id
    kw = dict(segment_ids=batch.segment_ids, position_ids=batch.position_ids, output_hidden_states=True)
    a = model(batch.input_ids, **kw).hidden_states
    b = model(changed, **kw).hidden_states
    condition = batch.segment_ids == 1
    assert torch.equal(a[condition], b[condition])
    assert not torch.allclose(a[target], b[target])
    # With full attention the condition does see the target.
    full = tiny_model(small_vocab.size, attention="full")
    a = full(batch.input_ids, **kw).hidden_states
    b = full(changed, **kw).hidden_states
    assert not torch.allclose(a[condition], b[condition])


def test_prefix_cache_is_exact_for_rows_of_different_condition_lengths(small_vocab):
    b = TemplateBuilder(small_vocab, caption_length=6, image_tokens=4, action_tokens=3, state_tokens=2)
    seqs = [b.vla([0, 1, 2, 3], [9], None), b.vla([3, 2, 1, 0], [4, 5, 6, 7, 8], None, state_codes=[2, 3])]
    batch = collate(seqs, pad_id=small_vocab.pad_id, padding_side="left")
    model = tiny_model(small_vocab.size)
    full = model(batch.input_ids, segment_ids=batch.segment_ids, position_ids=batch.position_ids).logits
    is_target = (batch.segment_ids == 2).all(dim=0)  # target columns line up under left padding
    first = int(is_target.nonzero()[0])
    cache = model(batch.input_ids[:, :first], segment_ids=batch.segment_ids[:, :first],
                  position_ids=batch.position_ids[:, :first], return_prefix_cache=True).prefix_cache
    cached = model(batch.input_ids[:, first:], segment_ids=batch.segment_ids[:, first:], prefix_cache=cache).logits
    torch.testing.assert_close(cached, full[:, first:], atol=1e-5, rtol=0)


def test_save_load_is_exact(tmp_path, small_vocab, batch):
    for tie in (True, False):
        model = tiny_model(small_vocab.size, tie_embeddings=tie)
        model.save_pretrained(tmp_path / str(tie))
        assert sorted(p.name for p in (tmp_path / str(tie)).iterdir()) == ["config.json", "model.safetensors"]
        loaded = MaskedDiffusionTransformer.from_pretrained(tmp_path / str(tie)).eval()
        kw = dict(segment_ids=batch.segment_ids, position_ids=batch.position_ids)
        assert torch.equal(model(batch.input_ids, **kw).logits, loaded(batch.input_ids, **kw).logits)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        MaskedDiffusionTransformer.from_pretrained(tmp_path / "missing")


def test_from_causal_lm_copies_weights_and_extends_vocab(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf_cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    llama = LlamaForCausalLM(hf_cfg).eval()
    llama.save_pretrained(tmp_path)
    model = MaskedDiffusionTransformer.from_causal_lm(tmp_path, vocab_size=80).eval()
    assert model.config.vocab_size == 80 and model.config.n_kv_heads == 2
    src = llama.state_dict()
    assert torch.equal(model.embed_tokens.weight[:50], src["model.embed_tokens.weight"])
    assert torch.equal(model.lm_head.weight[:50], src["lm_head.weight"])
    assert torch.equal(model.blocks[1].attn.k_proj.weight, src["model.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(model.blocks[0].mlp.down_proj.weight, src["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(model.blocks[0].mlp_norm.weight, src["model.layers.0.post_attention_layernorm.weight"])
    assert torch.isfinite(model.embed_tokens.weight[50:]).all()
    # Under a causal mask the copied network must compute exactly what the Llama computes.
    ids = torch.randint(0, 50, (2, 12))
    causal = torch.ones(12, 12, dtype=torch.bool).tril()[None].expand(2, 12, 12)
    ours = model(ids, attention_mask=causal).logits[..., :50]
    theirs = llama(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="cannot shrink"):
        MaskedDiffusionTransformer.from_causal_lm(tmp_path, vocab_size=10)


def test_init_embedding_rows_keeps_the_geometry_of_the_features():
    config = MaskedDiffusionConfig(vocab_size=40, d_model=64, n_layers=1, n_heads=2, max_seq_len=16)
    model = MaskedDiffusionTransformer(config)
    before = model.embed_tokens.weight.detach().clone()
    features = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    features[1] = features[0] + 0.01  # a near-duplicate code
    model.init_embedding_rows(10, features, seed=3)
    rows = model.embed_tokens.weight.detach()
    assert torch.equal(rows[:10], before[:10]) and torch.equal(rows[18:], before[18:])
    cos = torch.nn.functional.cosine_similarity
    assert cos(rows[10], rows[11], dim=0) > 0.99
    assert abs(float(cos(rows[10], rows[12], dim=0))) < 0.8
    assert abs(float(rows[10:18].std()) - config.init_std) < 0.5 * config.init_std
    with pytest.raises(ValueError, match="do not fit the vocabulary"):
        model.init_embedding_rows(35, features)
    with pytest.raises(ValueError, match=r"\(K, C\) matrix"):
        model.init_embedding_rows(0, torch.zeros(3))


def test_prefix_cache_stays_exact_with_segment_position_embeddings(small_vocab):
    b = TemplateBuilder(small_vocab, caption_length=6, image_tokens=4, action_tokens=3, state_tokens=2)
    batch = collate([b.vla([0, 1, 2, 3], [9], None), b.vla([3, 2, 1, 0], [4, 5, 6, 7, 8], None, state_codes=[2, 3])],
                    pad_id=small_vocab.pad_id, padding_side="left")
    model = tiny_model(small_vocab.size, segment_positions=8)
    with torch.no_grad():
        model.slot_embed.weight.normal_()  # large, so a misplaced slot would show
    kw = {"segment_ids": batch.segment_ids, "position_ids": batch.position_ids, "slot_ids": batch.slot_ids}
    full = model(batch.input_ids, **kw).logits
    assert not torch.allclose(full, model(batch.input_ids, segment_ids=batch.segment_ids,
                                          position_ids=batch.position_ids).logits)  # the slots are read
    first = int((batch.segment_ids == 2).all(dim=0).nonzero()[0])
    cache = model(batch.input_ids[:, :first], **{k: v[:, :first] for k, v in kw.items()},
                  return_prefix_cache=True).prefix_cache
    cached = model(batch.input_ids[:, first:], segment_ids=batch.segment_ids[:, first:], prefix_cache=cache,
                   slot_ids=batch.slot_ids[:, first:]).logits
    torch.testing.assert_close(cached, full[:, first:], atol=1e-5, rtol=0)
