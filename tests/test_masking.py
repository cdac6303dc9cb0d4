import math

import pytest
import torch

from unimask.masking import (MaskingConfig, diffusion_loss, forward_process, get_mask_schedule,
                             modality_logit_bias, stratified_times)
from template_builder import TemplateBuilder
from unimask.sequence import collate


@pytest.fixture
def builder(small_vocab):
    return TemplateBuilder(small_vocab, caption_length=8, image_tokens=16, action_tokens=6)


def make_batch(builder, n=32):
    seqs = []
    for i in range(n):
        codes = torch.arange(16) % 16
        kind = i % 3
        if kind == 0:
            seqs.append(builder.t2i([1, 2, 3], codes))
        elif kind == 1:
            seqs.append(builder.i2t(codes, [4, 5, 6]))
        else:
            seqs.append(builder.vla(codes, [7, 8], torch.arange(6) % 12))
    return collate(seqs, pad_id=builder.vocab.pad_id)


def test_stratified_times_one_per_stratum():
    g = torch.Generator().manual_seed(0)
    for batch_size in (1, 7, 64):
        t = stratified_times(batch_size, eps=1e-3, generator=g)
        u = (t - 1e-3) / (1 - 1e-3)
        strata = torch.floor(u * batch_size).long()
        assert sorted(strata.tolist()) == list(range(batch_size))
        assert (t > 1e-3).all() and (t < 1).all()


def test_schedules_endpoints_and_cosine_formula():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    for name in ("linear", "cosine", "pow2"):
        p = get_mask_schedule(name)(t)
        assert p[0] == 0 and torch.isclose(p[-1], torch.tensor(1.0)) and (p.diff() > 0).all()
    # MaskGIT: mask ratio cos(pi/2 * r) with r = 1 - t.
    torch.testing.assert_close(get_mask_schedule("cosine")(t), torch.cos(math.pi / 2 * (1 - t)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"`schedules.image` must be one of 'linear', 'cosine', 'pow2'.*'zigzag'"):
        MaskingConfig(schedules={"image": "zigzag"})


def test_condition_is_never_masked_without_dropout(builder, small_vocab):
    batch = make_batch(builder)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        out = forward_process(batch, small_vocab, MaskingConfig(p_uncond=0.0), g)
        not_target = ~batch.target_mask
        assert torch.equal(out.input_ids[not_target], batch.input_ids[not_target])
        assert not (out.masked & not_target).any()
        assert (out.input_ids[out.masked] == small_vocab.mask_id).all()


def test_condition_dropout_masks_whole_condition_payload(builder, small_vocab):
    batch = make_batch(builder, n=300)
    out = forward_process(batch, small_vocab, MaskingConfig(p_uncond=0.3), torch.Generator().manual_seed(2))
    cond = batch.condition_mask
    dropped_rows = out.condition_dropped
    assert 0.2 < dropped_rows.float().mean() < 0.4
    assert (out.input_ids[cond & dropped_rows[:, None]] == small_vocab.mask_id).all()
    assert torch.equal(out.input_ids[cond & ~dropped_rows[:, None]], batch.input_ids[cond & ~dropped_rows[:, None]])
    structure = ~batch.content_mask
    assert torch.equal(out.input_ids[structure], batch.input_ids[structure])  # task tokens, delimiters, padding


def test_mask_rate_follows_modality_schedule(builder, small_vocab):
    batch = make_batch(builder, n=600)
    out = forward_process(batch, small_vocab, MaskingConfig(p_uncond=0.0), torch.Generator().manual_seed(3))
    image_rows = torch.tensor([t == "t2i" for t in batch.tasks])
    target = batch.target_mask
    p_expected = torch.sin(math.pi / 2 * out.t[image_rows, 0])
    assert torch.allclose(out.p_mask[image_rows][target[image_rows]].view(-1, 16), p_expected[:, None].expand(-1, 16))
    observed = out.masked[image_rows].sum() / target[image_rows].sum()
    assert abs(float(observed) - float(p_expected.mean())) < 0.03


def test_complementary_masks_cover_each_target_token_once(builder, small_vocab):
    batch = make_batch(builder)
    out = forward_process(batch, small_vocab, MaskingConfig(complementary=True, p_uncond=0.0),
                          torch.Generator().manual_seed(4))
    n = len(batch)
    assert len(out.clean) == 2 * n
    cover = out.masked[:n].long() + out.masked[n:].long()
    assert torch.equal(cover, batch.target_mask.long())


def test_loss_equals_direct_elbo_computation(builder, small_vocab):
    batch = make_batch(builder)
    out = forward_process(batch, small_vocab, MaskingConfig(), torch.Generator().manual_seed(5))
    logits = torch.randn(*batch.input_ids.shape, small_vocab.size, generator=torch.Generator().manual_seed(6))
    result = diffusion_loss(logits, out, small_vocab, task_weights={"vla": 2.0})
    total, per_task_sum = 0.0, {}
    bias = modality_logit_bias(small_vocab)
    for b in range(len(batch)):
        w_task = 2.0 if batch.tasks[b] == "vla" else 1.0
        for i in range(batch.input_ids.shape[1]):
            if out.masked[b, i]:
                row = logits[b, i] + bias[batch.modality_ids[b, i]]
                ce = -torch.log_softmax(row, -1)[batch.input_ids[b, i]]
                total += w_task * float(ce) / float(out.p_mask[b, i])
                per_task_sum[batch.tasks[b]] = per_task_sum.get(batch.tasks[b], 0.0) + float(ce) / float(out.p_mask[b, i])
    assert math.isclose(float(result.loss), total / int(batch.target_mask.sum()), rel_tol=1e-4)
    for task, value in per_task_sum.items():
        rows = torch.tensor([t == task for t in batch.tasks])
        assert math.isclose(result.per_task()[task], value / int(batch.target_mask[rows].sum()), rel_tol=1e-4)
    assert result.num_masked == int(out.masked.sum())


def test_logit_bias_restricts_targets(small_vocab):
    bias = modality_logit_bias(small_vocab)
    start, stop = small_vocab.range_of("action")
    finite = torch.isfinite(bias[small_vocab.modality_index("action")]).nonzero().flatten()
    assert finite.tolist() == list(range(start, stop))
    assert torch.isinf(bias[:, small_vocab.mask_id]).all()


def test_ordinal_loss_charges_near_misses_less_and_tends_to_cross_entropy():
    from unimask.masking import ordinal_cross_entropy

    codes = torch.tensor([100])
    grid = torch.arange(256.0)
    near, far, wrong = (-(grid - centre) ** 2 / 8.0 for centre in (101.0, 110.0, 180.0))
    losses = [float(ordinal_cross_entropy(x[None], codes, 2.0)) for x in (near, far, wrong)]
    assert losses[0] < losses[1] < losses[2] and losses[0] < 0.1 * losses[2]
    logits = torch.randn(5, 256, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 256, (5,), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ordinal_cross_entropy(logits, targets, 0.05),
                               torch.nn.functional.cross_entropy(logits, targets, reduction="none"))


def test_ordinal_sigma_applies_to_its_modality_only(builder, small_vocab):
    batch = make_batch(builder)
    config = MaskingConfig(p_uncond=0.0)
    out = forward_process(batch, small_vocab, config, torch.Generator().manual_seed(7))
    logits = torch.randn(*batch.input_ids.shape, small_vocab.size, generator=torch.Generator().manual_seed(8))
    plain = diffusion_loss(logits, out, small_vocab)
    smoothed = diffusion_loss(logits, out, small_vocab, ordinal_sigma={"action": 1.5})
    assert smoothed.per_task()["t2i"] == pytest.approx(plain.per_task()["t2i"])
    assert smoothed.per_task()["vla"] != pytest.approx(plain.per_task()["vla"])
    with pytest.raises(ValueError, match="ordinal_sigma"):
        MaskingConfig(ordinal_sigma={"action": 0.0})
