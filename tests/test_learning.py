"""A tiny model must learn a conditional mapping with a vla-like layout and decode it from an all-[MASK] target."""

import torch

from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.sampler import generate
from unimask.schedulers.action import ActionUnmaskingScheduler
from template_builder import TemplateBuilder
from unimask.sequence import collate
from minimal_training import train_minimal
from unimask.vocab import UnifiedVocab

N_IMAGE, N_ACTION, CODEBOOK, ACTION_BINS = 8, 8, 16, 16


def target_of(image_codes: torch.Tensor) -> torch.Tensor:
    """The rule to learn: action j = (image code at position perm[j] * 5 + 3) mod bins, a fixed permutation + map."""
    perm = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])
    return (image_codes[..., perm] * 5 + 3) % ACTION_BINS


def test_tiny_model_learns_conditional_mapping():
    vocab = UnifiedVocab(text_size=8, modalities={"image": CODEBOOK, "action": ACTION_BINS})
    builder = TemplateBuilder(vocab, image_tokens=N_IMAGE, action_tokens=N_ACTION)
    g = torch.Generator().manual_seed(0)

    def batches(size=64):
        while True:
            codes = torch.randint(0, CODEBOOK, (size, N_IMAGE), generator=g)
            yield collate([builder.vla(c, [1], target_of(c)) for c in codes], pad_id=vocab.pad_id)

    torch.manual_seed(0)
    config = MaskedDiffusionConfig(vocab_size=vocab.size, d_model=96, n_layers=3, n_heads=4, max_seq_len=32)
    model = MaskedDiffusionTransformer(config)
    result = train_minimal(model, batches(), vocab, steps=900, lr=2e-3, masking=MaskingConfig(p_uncond=0.0),
                           generator=g, stop_when=lambda step, loss: step > 200 and loss < 0.01)

    test_codes = torch.randint(0, CODEBOOK, (256, N_IMAGE), generator=torch.Generator().manual_seed(123))
    batch = collate([builder.vla(c, [1], None) for c in test_codes], pad_id=vocab.pad_id, padding_side="left")
    decoded = generate(model, batch, vocab, ActionUnmaskingScheduler(vocab.mask_id), num_steps=4).tokens
    predicted = vocab.from_id("action", decoded)
    accuracy = float((predicted == target_of(test_codes)).float().mean())
    assert result.losses[-1] < result.losses[0] / 10
    assert accuracy >= 0.95, f"token accuracy {accuracy:.3f} after {result.steps} steps"
