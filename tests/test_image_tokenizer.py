import numpy as np
import pytest
import torch
from PIL import Image

from unimask.tokenizers.image import ImageInputError, VQImageTokenizer, build_vqmodel


@pytest.fixture
def tokenizer():
    torch.manual_seed(0)
    return VQImageTokenizer(build_vqmodel(32, (8, 16), latent_channels=4, codebook_size=32, norm_num_groups=4))


def test_encode_decode_shapes_dtypes_and_input_forms(tokenizer):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    codes = tokenizer.encode(arrays)
    assert codes.shape == (3, 16, 16) and codes.dtype == torch.long and tokenizer.latent_shape == (16, 16)
    images = tokenizer.decode(codes)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    # PIL, a single array, and a float tensor of the same pixels give the same codes.
    pil = [Image.fromarray(a) for a in arrays]
    assert torch.equal(tokenizer.encode(pil), codes)
    assert torch.equal(tokenizer.encode(arrays[0]), codes[:1])
    assert torch.equal(tokenizer.encode(torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255), codes)
    # Non-square and larger images are center-cropped and resized.
    assert tokenizer.encode(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).shape == (1, 16, 16)
    assert len(tokenizer.decode_to_pil(codes)) == 3


def test_decode_from_indices_equals_forward_reconstruction(tokenizer):
    arrays = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    x = tokenizer.preprocess(arrays)
    with torch.no_grad():
        forward = ((tokenizer.model(x).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(tokenizer.decode(tokenizer.encode(arrays)), forward, atol=1e-5, rtol=0)


def test_save_load_is_exact(tmp_path, tokenizer):
    arrays = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    tokenizer.save_pretrained(tmp_path)
    loaded = VQImageTokenizer.from_pretrained(tmp_path)
    codes = tokenizer.encode(arrays)
    assert torch.equal(loaded.encode(arrays), codes)
    assert torch.equal(loaded.decode(codes), tokenizer.decode(codes))
    assert loaded.resolution == 32 and loaded.codebook_size == 32
    with pytest.raises(FileNotFoundError, match="config.json"):
        VQImageTokenizer.from_pretrained(tmp_path / "missing")


def test_bad_inputs_raise(tokenizer):
    with pytest.raises(ImageInputError, match=r"\[H, W, 3\]"):
        tokenizer.encode(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ImageInputError, match="uint8"):
        tokenizer.encode(np.zeros((32, 32, 3), dtype=np.float64))
    with pytest.raises(ImageInputError, match="PIL image"):
        tokenizer.encode("not an image")
    with pytest.raises(ImageInputError, match="no images"):
        tokenizer.encode([])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\)"):
        tokenizer.decode(torch.full((1, 16, 16), 32))
    with pytest.raises(ValueError, match="codes must have shape"):
        tokenizer.decode(torch.zeros((1, 5, 5), dtype=torch.long))


def _blocks(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Rectangles in a 6-colour palette on a palette background: a small codebook can represent them."""
    rng = np.random.default_rng(seed)
    palette = np.array([[20, 20, 20], [220, 40, 40], [40, 180, 60], [50, 90, 235], [240, 210, 40], [240, 240, 240]])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    for image in images:
        image[:] = palette[rng.integers(0, 6)]
        for _ in range(2):
            x0, y0 = rng.integers(0, size - 4, 2)
            image[y0:y0 + int(rng.integers(3, 8)), x0:x0 + int(rng.integers(3, 8))] = palette[rng.integers(0, 6)]
    return images


def test_short_vq_training_lowers_loss_and_revives_dead_codes(tmp_path):
    from unimask.training.vq_trainer import VQModelConfig, VQTrainConfig, train_vq

    for split, n, seed in (("train", 200, 0), ("test", 20, 1)):
        folder = tmp_path / "images" / split
        folder.mkdir(parents=True)
        for i, image in enumerate(_blocks(n, seed=seed)):
            Image.fromarray(image).save(folder / f"{i}.png")
    config = VQTrainConfig(data=[str(tmp_path / "images")], eval_images=16, steps=300, batch_size=16, lr=3e-3,
                           warmup=10, dead_code_window=20, sample_every=150, checkpoint_every=150,
                           model=VQModelConfig(resolution=16, block_out_channels=[16, 16], latent_channels=4,
                                               codebook_size=64, norm_num_groups=4))
    metrics = train_vq(config, tmp_path / "run", progress=False)
    # Reconstruction + quantizer loss must fall at least 3x from the first step (stated factor).
    assert metrics["final_loss"] < metrics["first_loss"] / 3, metrics
    assert metrics["dead_codes_reinitialised"] > 0 and metrics["codebook_usage"] > 0.25, metrics
    assert metrics["psnr"] > 14, metrics  # an untrained model scores about 10 dB here
    assert (tmp_path / "run" / "samples" / "recon_0000300.png").is_file()
    loaded = VQImageTokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert loaded.codebook_size == 64
    # Resuming a finished run does no more steps and gives the same tokenizer.
    again = train_vq(config, tmp_path / "run", progress=False)
    assert again["steps"] == 300 and again["psnr"] == pytest.approx(metrics["psnr"])
