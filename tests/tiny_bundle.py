"""A tiny untrained but complete inference bundle (text, VQ, actions, state, model) for pipeline-level tests."""

from pathlib import Path

import numpy as np
import torch


def make_tiny_bundle(directory: Path, image_size: int = 32, state_dim: int = 3) -> Path:
    from unimask.bundle import Bundle
    from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
    from unimask.processor import Processor, SequenceSettings
    from unimask.tokenizers.action import BinActionTokenizer
    from unimask.tokenizers.image import VQImageTokenizer, build_vqmodel
    from unimask.tokenizers.text import train_text_tokenizer

    torch.manual_seed(0)
    text = train_text_tokenizer(["the digit seven", "open the drawer", "a red square"] * 5, vocab_size=280)
    channels = (8, 16) if image_size <= 32 else (8, 16, 16)  # 16 x 16 codes either way
    image = VQImageTokenizer(build_vqmodel(image_size, channels, latent_channels=4, codebook_size=16,
                                           norm_num_groups=4))
    rng = np.random.default_rng(0)
    actions = BinActionTokenizer(n_bins=16).fit(rng.uniform(-1, 1, (100, 4)))
    state = BinActionTokenizer(n_bins=8).fit(rng.uniform(-1, 1, (100, state_dim)))
    processor = Processor({"text": text, "image": image, "action": actions, "state": state},
                          SequenceSettings(caption_length=8, action_horizon=2, action_dim=4))
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=processor.vocab.size, d_model=32, n_layers=1,
                                                             n_heads=2, max_seq_len=512))
    Bundle(model, processor).save(directory)
    return directory


def reseal(directory: Path) -> Path:
    """Record the current files of a bundle as its export checksums, as if it had been exported like this: for tests
    that edit a part on purpose to reach the checks behind the checksums."""
    import json

    from unimask.atomic import file_digests
    from unimask.bundle import CHECKSUMS_FILE

    digests = file_digests(directory, skip=(CHECKSUMS_FILE,))
    (Path(directory) / CHECKSUMS_FILE).write_text(json.dumps({"sha256": digests}))
    return directory
