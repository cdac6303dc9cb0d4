"""Conformance of the unmasking schedulers and the sampler loop."""

import math

import pytest
import torch

from unimask.errors import InputError, InputTypeError
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.sampler import generate
from unimask.schedulers.action import ActionUnmaskingScheduler
from unimask.schedulers.base import NotReadyError
from unimask.schedulers.image import ImageUnmaskingScheduler, masked_counts
from unimask.schedulers.text import TextUnmaskingScheduler, llada_split
from template_builder import TemplateBuilder
from unimask.sequence import collate
from unimask.vocab import UnifiedVocab


@pytest.fixture(scope="module")
def setup():
    vocab = UnifiedVocab(text_size=30, modalities={"image": 16, "action": 10})
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=vocab.size, d_model=32, n_layers=2,
                                                             n_heads=4, max_seq_len=128)).eval()
    builder = TemplateBuilder(vocab, caption_length=12, image_tokens=9, action_tokens=8)
    return vocab, model, builder


def llada_reference(model, batch, vocab, steps, block_length):
    """A straight-line re-implementation of LLaDA's published generate() (temperature 0, low-confidence remasking,
    no CFG), with logits outside the text range set to -inf."""
    x = batch.input_ids.clone()
    prompt_len = int((batch.segment_ids[0] != 2).sum())
    gen_length = x.shape[1] - prompt_len
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    allowed = vocab.allowed_mask("text", ("eos", "pad"))
    for num_block in range(num_blocks):
        lo, hi = prompt_len + num_block * block_length, prompt_len + (num_block + 1) * block_length
        block_mask_index = x[:, lo:hi] == vocab.mask_id
        mask_num = block_mask_index.sum(dim=1, keepdim=True)
        base, remainder = mask_num // steps_per_block, mask_num % steps_per_block
        num_transfer = torch.zeros(x.shape[0], steps_per_block, dtype=torch.long) + base
        for i in range(x.shape[0]):
            num_transfer[i, : int(remainder[i])] += 1
        for i in range(steps_per_block):
            mask_index = x == vocab.mask_id
            logits = model(x, segment_ids=batch.segment_ids, position_ids=batch.position_ids).logits
            logits = logits.masked_fill(~allowed, float("-inf"))
            x0 = torch.argmax(logits, dim=-1)
            p = torch.softmax(logits.float(), dim=-1)
            x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)
            x0_p[:, hi:] = float("-inf")
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.tensor(float("-inf")))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(confidence.shape[0]):
                _, select = torch.topk(confidence[j], k=int(num_transfer[j, i]))
                transfer[j, select] = True
            x[transfer] = x0[transfer]
    return x


@pytest.mark.parametrize("steps,block_length", [(12, 12), (6, 4), (12, 3)])
def test_text_scheduler_matches_llada_token_for_token(setup, steps, block_length):
    vocab, model, builder = setup
    codes = torch.randint(0, 16, (3, 9), generator=torch.Generator().manual_seed(steps))
    batch = collate([builder.i2t(c) for c in codes], pad_id=vocab.pad_id, padding_side="left")
    expected = llada_reference(model, batch, vocab, steps, block_length)
    for use_cache in (False, True):
        scheduler = TextUnmaskingScheduler(vocab.mask_id, vocab.eos_id, vocab.pad_id, block_length=block_length,
                                           stop_at_eos=False)
        out = generate(model, batch, vocab, scheduler, steps, use_cache=use_cache)
        assert torch.equal(out.input_ids, expected)
        assert out.forward_passes == steps


def test_llada_split():
    counts = llada_split(torch.tensor([10, 3, 0]), 4)
    assert counts.tolist() == [[3, 3, 2, 2], [1, 1, 1, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize("n,s", [(64, 8), (64, 12), (256, 16), (16, 16), (9, 4)])
def test_image_cosine_counts_follow_the_formula(n, s):
    counts = masked_counts(n, s, "cosine")
    previous = n
    for step, count in enumerate(counts):
        if step == s - 1:
            assert count == 0
        else:
            formula = math.floor(n * math.cos(math.pi / 2 * (step + 1) / s))
            assert count == max(1, min(previous - 1, formula))
        previous = count


def test_image_sampler_masked_counts_per_step(setup):
    vocab, model, builder = setup
    batch = collate([builder.t2i([1, 2, 3]), builder.t2i([4, 5])], pad_id=vocab.pad_id, padding_side="left")
    scheduler = ImageUnmaskingScheduler(vocab.mask_id, temperature=1.0)
    out = generate(model, batch, vocab, scheduler, 4, generator=torch.Generator().manual_seed(0),
                   return_trajectory=True)
    still_masked = [int((t == vocab.mask_id).sum(dim=1)[0]) for t in out.trajectory]
    assert still_masked == masked_counts(9, 4, "cosine")
    image = vocab.range_of("image")
    assert ((out.tokens >= image[0]) & (out.tokens < image[1])).all()


def test_threshold_commits_exactly_the_rule_on_hand_made_logits():
    mask, eos, pad = 99, 97, 98
    scheduler = TextUnmaskingScheduler(mask, eos, pad, block_length=4, threshold=0.7, stop_at_eos=False)
    scheduler.set_timesteps(2, 8)
    vocab_size = 100
    probs = [[0.9, 0.5, 0.75, 0.6, 0.99, 0.99, 0.99, 0.99], [0.3, 0.4, 0.5, 0.2, 0.99, 0.99, 0.99, 0.99]]
    logits = torch.full((2, 8, vocab_size), -30.0)
    for b, row in enumerate(probs):
        for i, p in enumerate(row):
            # token i gets probability p; the rest of the mass sits on token 50 (p < 0.5 makes 50 the argmax)
            logits[b, i, i] = math.log(p)
            logits[b, i, 50] = math.log(1 - p)
    tokens = torch.full((2, 8), mask)
    out = scheduler.step(logits, tokens)
    # Row 0: positions 0 (0.9) and 2 (0.75) pass tau = 0.7; row 1: none passes, so only its most confident one
    # (position 3: argmax is token 50 with probability 0.8). Positions 4-7 lie outside the first block.
    assert out.committed[0].nonzero().flatten().tolist() == [0, 2]
    assert out.committed[1].nonzero().flatten().tolist() == [3]
    assert out.tokens[0, 0] == 0 and out.tokens[0, 2] == 2 and out.tokens[1, 3] == 50


def test_text_stops_at_eos_and_pads_after(setup):
    scheduler = TextUnmaskingScheduler(99, 97, 98, block_length=4)
    scheduler.set_timesteps(1, 4)
    logits = torch.full((1, 4, 100), -10.0)
    for i, token in enumerate([5, 97, 6, 7]):
        logits[0, i, token] = 10.0
    out = scheduler.step(logits, torch.full((1, 4), 99))
    assert out.tokens.tolist() == [[5, 97, 98, 98]] and bool(out.done[0])


def test_action_scheduler_finishes_in_the_given_steps(setup):
    vocab, model, builder = setup
    batch = collate([builder.vla(torch.arange(9) % 16, [1, 2], None)], pad_id=vocab.pad_id, padding_side="left")
    for steps in (1, 2, 4):
        for remask in (None, 0.5):
            scheduler = ActionUnmaskingScheduler(vocab.mask_id, remask_threshold=remask)
            out = generate(model, batch, vocab, scheduler, steps, return_trajectory=True)
            assert out.forward_passes == steps and not (out.tokens == vocab.mask_id).any()
            masked = [int((t == vocab.mask_id).sum()) for t in out.trajectory]
            if remask is None:
                assert masked == [round(8 * (1 - (s + 1) / steps)) for s in range(steps)]
            assert all(a >= b for a, b in zip(masked, masked[1:])) or remask is not None


def test_prefix_cache_on_off_gives_identical_tokens_with_guidance(setup):
    vocab, model, builder = setup
    seqs = [builder.vla(torch.arange(9) % 16, [1, 2, 3], None), builder.vla(torch.arange(9) % 7, [4], None)]
    batch = collate(seqs, pad_id=vocab.pad_id, padding_side="left")
    results = []
    for use_cache in (True, False):
        scheduler = ActionUnmaskingScheduler(vocab.mask_id)
        results.append(generate(model, batch, vocab, scheduler, 2, guidance_scale=2.0, use_cache=use_cache).tokens)
    assert torch.equal(results[0], results[1])


def test_schedulers_validate_and_require_set_timesteps():
    with pytest.raises(NotReadyError, match="set_timesteps"):
        TextUnmaskingScheduler(9, 8, 7).step(torch.zeros(1, 2, 10), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`remasking` must be"):
        TextUnmaskingScheduler(9, 8, 7, remasking="lowest")
    with pytest.raises(ValueError, match="`num_steps` must be an integer >= 1, got 0"):
        ImageUnmaskingScheduler(9).set_timesteps(0, 4)
    with pytest.raises(ValueError, match="multiple of the number of blocks"):
        TextUnmaskingScheduler(9, 8, 7, block_length=4).set_timesteps(3, 8)
    with pytest.raises(InputError, match=r"`schedule` must be one of \['cosine'"):
        ImageUnmaskingScheduler(9, schedule="zigzag")
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(InputError, match="`temperature` must be a finite number"):
            ImageUnmaskingScheduler(9, temperature=bad)
        with pytest.raises(InputError, match="`choice_temperature` must be a finite number"):
            ImageUnmaskingScheduler(9, choice_temperature=bad)
    with pytest.raises(InputTypeError, match="`temperature` must be a number, got str"):
        ActionUnmaskingScheduler(9, temperature="hot")
