"""CLIP score with open_clip: the user's own CLIP from a local path, or a small CLIP trained on the dataset's pairs.

CLIP score (Hessel et al., 2021) is `100 * max(cos(image embedding, text embedding), 0)`. No weights are fetched
from a hub: `ClipScorer.load` takes either a folder in open_clip's `local-dir` layout (`open_clip_config.json` +
weights; what `train_clip` writes) or an open_clip architecture name with a local checkpoint file.

A CLIP trained here sees only the real training pairs of the built-in datasets. Like the digit judge, it must prove
itself before it scores anything: zero-shot classification of the real held-out digits (prompt ensemble over the
caption templates) has to reach `min_zero_shot`, or `train_clip` raises. Its scores are only comparable with other
scores from the same CLIP, so every result carries the reference scores of real pairs and of mismatched pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unimask.atomic import atomic_write, atomic_write_text

from .judge import JudgeTooWeakError

CLIP_CONFIG = "open_clip_config.json"  # open_clip's local-dir layout
CLIP_WEIGHTS = "open_clip_model.safetensors"
CLIP_CHECK = "clip_check.json"  # the zero-shot check and reference scores of a CLIP trained here


@dataclass
class ClipTrainConfig:
    embed_dim: int = 64  # joint embedding size
    image_size: int = 32  # images are resized to this square size
    patch_size: int = 8  # ViT patch size (32 / 8 = a 4x4 grid of patches)
    vision_width: int = 64
    vision_layers: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_length: int = 32  # text tokens (open_clip's BPE tokenizer); captions here are shorter
    epochs: int = 16  # passes over the training pairs
    batch_size: int = 64  # pairs per contrastive batch
    lr: float = 2e-3  # AdamW peak learning rate (one-cycle schedule)
    min_zero_shot: float = 0.9  # required zero-shot accuracy on the real held-out digits
    seed: int = 0  # initialisation, shuffling and caption choice

    def open_clip_config(self) -> dict[str, Any]:
        return {
            "model_cfg": {
                "embed_dim": self.embed_dim,
                "vision_cfg": {"image_size": self.image_size, "patch_size": self.patch_size,
                               "width": self.vision_width, "layers": self.vision_layers, "head_width": 32},
                "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                             "heads": self.text_heads, "layers": self.text_layers},
            },
            "preprocess_cfg": {"size": self.image_size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                               "interpolation": "bicubic", "resize_mode": "shortest"},
        }


def _as_pil(images: Sequence[Any]) -> list:
    from PIL import Image

    out = []
    for image in images:
        if isinstance(image, Image.Image):
            out.append(image.convert("RGB"))
            continue
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"images must be PIL images or uint8 [H, W, 3] arrays, got {array.dtype} {array.shape}.")
        out.append(Image.fromarray(array))
    return out


class ClipScorer:
    """An open_clip model with its preprocessing and tokenizer; `score(images, texts)` is the CLIP score per pair."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, source: str):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def load(cls, source: str | Path, weights: str | Path | None = None, device: str = "cpu") -> "ClipScorer":
        """`source` is a folder in open_clip's local-dir layout, or an architecture name such as "ViT-B-32" with
        `weights` a checkpoint file on disk (.safetensors, or a .pt/.bin read with `weights_only=True`)."""
        import open_clip

        path = Path(source)
        if path.is_dir():
            if weights is not None:
                raise ValueError(f"`weights` ({weights}) goes with an architecture name; the folder {path} holds "
                                 "its own weights. Pass one or the other.")
            if not (path / CLIP_CONFIG).is_file():
                raise FileNotFoundError(f"{path} has no {CLIP_CONFIG}: it is not an open_clip local-dir folder. "
                                        "Train one with `unimask eval train-clip` or pass an architecture name "
                                        "with --clip-weights.")
            name, pretrained = f"local-dir:{path}", None
        else:
            if str(source) not in open_clip.list_models():
                raise ValueError(f"CLIP source {str(source)!r} is neither a folder nor an open_clip architecture "
                                 "(open_clip.list_models() lists them).")
            if weights is None or not Path(weights).is_file():
                raise FileNotFoundError(f"architecture {source!r} needs `weights`, a checkpoint file on this disk "
                                        f"(got {weights!r}); unimask never downloads weights.")
            name, pretrained = str(source), str(weights)
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device,
                                                                     require_pretrained=True, weights_only=True)
        return cls(model, preprocess, open_clip.get_tokenizer(name), str(source))

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: Sequence[Any], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm image embeddings [N, E] for PIL images or uint8 [H, W, 3] arrays."""
        pils = _as_pil(images)
        chunks = []
        for start in range(0, len(pils), batch_size):
            x = torch.stack([self.preprocess(p) for p in pils[start:start + batch_size]]).to(self._device())
            chunks.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(chunks).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm text embeddings [N, E]."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self._device())
            chunks.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        return torch.cat(chunks).cpu()

    def score(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
        """CLIP score of each (image, text) pair: 100 * max(cosine, 0)."""
        if len(images) != len(texts) or not texts:
            raise ValueError(f"need as many images as texts (> 0), got {len(images)} and {len(texts)}.")
        return pair_scores(self.embed_images(images), self.embed_texts(texts))

    def zero_shot(self, images: Sequence[Any], class_prompts: Sequence[Sequence[str]]) -> np.ndarray:
        """Class index per image: the class whose mean prompt embedding (a prompt ensemble) is nearest."""
        classes = torch.stack([F.normalize(self.embed_texts(p).mean(0), dim=-1) for p in class_prompts])
        return (self.embed_images(images) @ classes.T).argmax(-1).numpy()


def pair_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> np.ndarray:
    """CLIP score of each row pair of unit-norm embeddings [N, E]: 100 * max(cosine, 0)."""
    return (100.0 * (image_embeddings * text_embeddings).sum(-1).clamp(min=0)).numpy()


def reference_scores(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> dict[str, float]:
    """The scale a CLIP score is read on: the mean score of real pairs (ceiling) and of each real image with its
    neighbour's text (floor; consecutive held-out samples differ in content)."""
    if len(image_embeddings) < 2:
        raise ValueError(f"reference scores need at least 2 pairs, got {len(image_embeddings)}.")
    return {"real_pair_clip_score": float(pair_scores(image_embeddings, text_embeddings).mean()),
            "mismatched_pair_clip_score": float(pair_scores(image_embeddings, text_embeddings.roll(-1, 0)).mean())}


def save_clip(model: torch.nn.Module, config: ClipTrainConfig, directory: str | Path) -> Path:
    """Write `model` in open_clip's local-dir layout."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / CLIP_WEIGHTS, lambda tmp: save_file(state, tmp))
    atomic_write_text(directory / CLIP_CONFIG, json.dumps(config.open_clip_config(), indent=2))
    return directory


def train_clip(pairs: Sequence[tuple[np.ndarray, Sequence[str]]], check_images: Sequence[np.ndarray],
               check_labels: Sequence[int], class_prompts: Sequence[Sequence[str]], out: str | Path,
               config: ClipTrainConfig | None = None, progress: bool = True) -> tuple[ClipScorer, float]:
    """Train a small CLIP on (image, caption paraphrases) pairs with the symmetric contrastive loss, save it to
    `out`, and return it with its zero-shot accuracy on `check_images` (raises `JudgeTooWeakError` below
    `config.min_zero_shot`). Each epoch draws one paraphrase per image."""
    import open_clip

    from .fit import fit_on_shifted_images

    config = config or ClipTrainConfig()
    if not pairs:
        raise ValueError("train_clip needs at least one (image, captions) pair.")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    cfg = config.open_clip_config()
    model = open_clip.CLIP(**cfg["model_cfg"], output_dict=True)
    preprocess = open_clip.image_transform(config.image_size, is_train=False, mean=cfg["preprocess_cfg"]["mean"],
                                           std=cfg["preprocess_cfg"]["std"])
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=config.context_length)
    images = torch.stack([preprocess(p) for p in _as_pil([image for image, _ in pairs])])
    captions = [list(texts) for _, texts in pairs]
    loss_fn = open_clip.ClipLoss()

    def batch_loss(batch: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        texts = tokenizer([captions[i][rng.integers(len(captions[i]))] for i in index.tolist()])
        features = model(batch, texts)
        return loss_fn(features["image_features"], features["text_features"], features["logit_scale"])

    fit_on_shifted_images(model, images, batch_loss, epochs=config.epochs, batch_size=config.batch_size,
                          lr=config.lr, weight_decay=0.1, seed=config.seed, desc="clip", progress=progress)
    save_clip(model, config, out)
    scorer = ClipScorer.load(out)
    accuracy = float((scorer.zero_shot(check_images, class_prompts) == np.asarray(check_labels)).mean())
    if accuracy < config.min_zero_shot:
        raise JudgeTooWeakError(
            f"the CLIP trained in {out} classifies {accuracy:.3f} of the real held-out digits zero-shot, below "
            f"min_zero_shot={config.min_zero_shot}; train longer (epochs) before trusting its scores.")
    return scorer, accuracy
