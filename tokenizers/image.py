"""Images as VQ codes: the image modality, and its tokenizer, a thin wrapper around `diffusers.VQModel` that maps
pixels to code indices and back.

Inputs may be PIL images, uint8 arrays ([H, W, 3] or [B, H, W, 3]) or float tensors in [0, 1] ([3, H, W] or
[B, 3, H, W]). Every image is center-cropped to a square (if it is not one) and resized to `resolution` with
antialiased bilinear interpolation before encoding. `encode` returns codes [B, h, w]; `decode` returns float
tensors [B, 3, resolution, resolution] in [0, 1]; `decode_to_pil` returns PIL images.

Any diffusers `VQModel` folder loads with `from_pretrained` (for example a VQ-VAE a user downloaded); our own
settings (the input resolution) live in a small json beside the diffusers files and default to the model's
`sample_size`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unimask.atomic import atomic_write_text
from unimask.errors import InputError
from unimask.modality import Modality, SampleError, decode_image

SETTINGS_FILE = "unimask_image_tokenizer.json"


class ImageInputError(InputError):
    """An input is not an RGB image in a supported form."""


def build_vqmodel(resolution: int = 64, block_out_channels: Sequence[int] = (32, 64, 64, 64), layers_per_block: int = 1,
                  latent_channels: int = 16, codebook_size: int = 512, norm_num_groups: int = 16,
                  mid_attention: bool = False):
    """A fresh VQModel whose encoder downsamples by 2 ** (len(block_out_channels) - 1)."""
    from diffusers import VQModel

    levels = len(block_out_channels)
    if resolution % (2 ** (levels - 1)):
        raise ValueError(f"`resolution` ({resolution}) must be divisible by 2 ** (levels - 1) = {2 ** (levels - 1)}.")
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                   up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(block_out_channels),
                   layers_per_block=layers_per_block, latent_channels=latent_channels,
                   num_vq_embeddings=codebook_size, vq_embed_dim=latent_channels, norm_num_groups=norm_num_groups,
                   sample_size=resolution, mid_block_add_attention=mid_attention)


def _one_image(image: Any) -> torch.Tensor:
    """(3, H, W) float in [0, 1] from one PIL image / uint8 array [H, W, 3] / float tensor [3, H, W]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageInputError(f"an image array must be [H, W, 3] RGB, got shape {image.shape}.")
        if image.dtype != np.uint8:
            raise ImageInputError(f"image arrays must be uint8 (0-255), got {image.dtype}; pass floats as tensors.")
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float() / 255.0
    elif isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ImageInputError(f"an image tensor must be [3, H, W], got shape {tuple(image.shape)}.")
        if not image.is_floating_point():
            raise ImageInputError("image tensors must be float in [0, 1]; pass uint8 images as numpy arrays.")
        x = image.detach().float().cpu()
        if not bool(torch.isfinite(x).all()):
            raise ImageInputError("the image tensor holds NaN or infinite values; give finite values in [0, 1].")
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ImageInputError(f"float image tensors must hold values in [0, 1], got [{float(x.min()):.3g}, "
                                  f"{float(x.max()):.3g}]; divide 0-255 values by 255.")
    else:
        raise ImageInputError(f"expected a PIL image, a uint8 array or a float tensor, got {type(image).__name__}.")
    if min(x.shape[1:]) < 1:
        raise ImageInputError(f"the image has no pixels (size {x.shape[2]}x{x.shape[1]}).")
    return x


def to_tensor_batch(images: Any, resolution: int) -> torch.Tensor:
    """(B, 3, resolution, resolution) float in [0, 1]; crops non-square images at the centre, then resizes."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, torch.Tensor) and images.dim() == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ImageInputError("got no images.")
    batch = []
    for image in images:
        x = _one_image(image)
        _, h, w = x.shape
        if h != w:
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[:, top:top + side, left:left + side]
        if x.shape[-1] != resolution:
            x = F.interpolate(x[None], size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=True)[0]
        batch.append(x.clamp(0, 1))
    return torch.stack(batch)


class VQImageTokenizer:
    def __init__(self, model, resolution: int | None = None):
        self.model = model.eval()
        self.resolution = int(resolution or model.config.sample_size)
        factor = 2 ** (len(model.config.block_out_channels) - 1)
        if self.resolution % factor:
            raise ValueError(f"`resolution` ({self.resolution}) must be divisible by the downsampling {factor}.")
        self.latent_shape = (self.resolution // factor, self.resolution // factor)

    @property
    def codebook_size(self) -> int:
        return int(self.model.config.num_vq_embeddings)

    @property
    def vocab_size(self) -> int:
        """Code ids the tokenizer emits (the modality's share of the vocabulary)."""
        return self.codebook_size

    @property
    def codebook_vectors(self) -> torch.Tensor:
        """(codebook_size, C) float copy of the quantizer's code vectors."""
        return self.model.quantize.embedding.weight.detach().float().cpu().clone()

    @property
    def num_tokens(self) -> int:
        return self.latent_shape[0] * self.latent_shape[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> "VQImageTokenizer":
        self.model.to(device)
        return self

    def preprocess(self, images: Any) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] on the model's device."""
        return to_tensor_batch(images, self.resolution).to(self.device) * 2 - 1

    @torch.no_grad()
    def encode(self, images: Any) -> torch.Tensor:
        """LongTensor (B, h, w) of code indices."""
        latents = self.model.encode(self.preprocess(images)).latents
        _, _, (_, _, indices) = self.model.quantize(latents)
        return indices.view(latents.shape[0], *latents.shape[2:]).long()

    @torch.no_grad()
    def decode(self, codes: Any) -> torch.Tensor:
        """Float (B, 3, R, R) in [0, 1] from codes (B, h, w) or (B, h*w)."""
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        if codes.dim() == 1:
            codes = codes[None]
        h, w = self.latent_shape
        if codes.shape[1:] not in (torch.Size([h, w]), torch.Size([h * w])):
            raise ValueError(f"codes must have shape (B, {h}, {w}) or (B, {h * w}), got {tuple(codes.shape)}.")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}].")
        channels = self.model.config.vq_embed_dim or self.model.config.latent_channels
        z = self.model.quantize.get_codebook_entry(codes.reshape(-1), shape=(codes.shape[0], h, w, channels))
        return ((self.model.decode(z, force_not_quantize=True).sample + 1) / 2).clamp(0, 1)

    def decode_to_pil(self, codes: Any) -> list:
        from PIL import Image

        images = (self.decode(codes) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(image) for image in images]

    @torch.no_grad()
    def reconstruct(self, images: Any) -> torch.Tensor:
        """Encode then decode: float (B, 3, R, R) in [0, 1]."""
        return self.decode(self.encode(images))

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        atomic_write_text(directory / SETTINGS_FILE, json.dumps({"resolution": self.resolution}, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "VQImageTokenizer":
        from diffusers import VQModel

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory} has no config.json; give a diffusers VQModel folder.")
        raw = json.loads((directory / "config.json").read_text())
        if raw.get("_class_name") not in (None, "VQModel"):
            raise ValueError(f"{directory} holds a {raw.get('_class_name')}, not a diffusers VQModel.")
        # low_cpu_mem_usage=False: VQ tokenizers are small, and the default would ask for `accelerate` on every load.
        # float32 whatever the file holds (the shipped tokenizers are stored in half precision).
        model = VQModel.from_pretrained(str(directory), local_files_only=True, low_cpu_mem_usage=False,
                                        torch_dtype=torch.float32)
        settings = json.loads((directory / SETTINGS_FILE).read_text()) if (directory / SETTINGS_FILE).is_file() else {}
        return cls(model, resolution=settings.get("resolution"))


class ImageModality(Modality):
    """Images as VQ codes: the target of text to image, and an image condition read as codes."""

    name = "image"
    raw_keys = ("png", "jpg")
    codes_key = "img_codes.npy"
    mask_schedule = "cosine"
    scheduler = "maskgit"
    delimiters = ("soi", "eoi")

    def load_tokenizer(self, directory: Any) -> VQImageTokenizer:
        return VQImageTokenizer.from_pretrained(directory)

    def encode(self, tokenizer: VQImageTokenizer, values: Sequence[Any], settings: Any = None) -> list[np.ndarray]:
        codes = tokenizer.encode(list(values)).flatten(1).cpu().numpy()
        return list(codes.astype(np.int64))

    def decode(self, tokenizer: VQImageTokenizer, codes: np.ndarray, settings: Any = None) -> list:
        return tokenizer.decode_to_pil(codes)

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> np.ndarray:
        return decode_image(raw.get("png") or raw["jpg"])

    def check(self, value: np.ndarray, card: dict[str, Any]) -> None:
        size = card.get("image_size")
        if isinstance(size, list) and len(size) == 2 and tuple(value.shape[:2]) != tuple(size):
            raise SampleError("bad_shape", f"image is {value.shape[:2]}, the dataset's images are {tuple(size)}")



class FutureFrameModality(ImageModality):
    """The frame a robot will see some steps ahead, as VQ codes of the image modality (its ids, tokenizer, mask
    schedule and scheduler), read from `future.png` / `future_codes.npy`: a foresight target beside an action chunk
    (`sequence.targets: {vla: [future]}`)."""

    name = "future"
    raw_keys = ("future.png",)
    codes_key = "future_codes.npy"
    shares = "image"

    def read(self, raw: dict[str, bytes], meta: dict[str, Any]) -> np.ndarray:
        return decode_image(raw["future.png"])

    def dataset_mismatch(self, tokenizer: Any, card: dict[str, Any], settings: Any) -> str | None:
        if not card.get("foresight"):
            return ("its samples hold no future frames; write the data with `unimask data metaworld --foresight K` "
                    "(the frame K steps ahead) to train foresight rows.")
        return None
