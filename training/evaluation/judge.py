"""An independent image judge: a small timm classifier trained from scratch on real training images only.

It scores text-to-image outputs by the fraction of generated images it assigns to the prompted class. Before it
may judge anything it must reach `min_accuracy` on the real held-out images; `train_judge` raises otherwise, so a
weak judge can never produce a flattering number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unimask.training.weights import load_weights, save_weights

JUDGE_FILE = "judge.safetensors"
JUDGE_CONFIG = "judge.json"


class JudgeTooWeakError(RuntimeError):
    """The judge did not reach its required accuracy on real held-out images."""


@dataclass
class JudgeConfig:
    arch: str = "resnet10t"  # timm architecture, always built with pretrained=False
    num_classes: int = 10  # classes the judge tells apart
    image_size: int = 64  # images are resized to this square size
    epochs: int = 12  # passes over the training images
    batch_size: int = 64  # images per step
    lr: float = 2e-3  # AdamW learning rate (cosine decay to 0)
    min_accuracy: float = 0.97  # required accuracy on the real held-out images
    seed: int = 0  # initialisation and shuffling seed


def _to_tensor(images: np.ndarray | Sequence, size: int) -> torch.Tensor:
    array = np.stack([np.asarray(im) for im in images]) if not isinstance(images, np.ndarray) else images
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {array.dtype} {array.shape}.")
    x = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, H, W) in [-1, 1]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


class ImageJudge:
    def __init__(self, config: JudgeConfig):
        import timm

        self.config = config
        self.model = timm.create_model(config.arch, pretrained=False, num_classes=config.num_classes).eval()

    @torch.no_grad()
    def predict(self, images: np.ndarray | Sequence, batch_size: int = 256) -> np.ndarray:
        """Class index per image (uint8 [N, H, W, 3] or a list of PIL images / arrays)."""
        x = _to_tensor(images, self.config.image_size)
        self.model.eval()
        return torch.cat([self.model(x[i:i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]).numpy()

    def accuracy(self, images, labels) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())

    def save(self, directory: str | Path) -> Path:
        return save_weights(directory, self.model, self.config, JUDGE_FILE, JUDGE_CONFIG)

    @classmethod
    def load(cls, directory: str | Path) -> "ImageJudge":
        config, state = load_weights(directory, JUDGE_FILE, JUDGE_CONFIG, "train one with `unimask eval train-judge`")
        judge = cls(JudgeConfig(**config))
        judge.model.load_state_dict(state)
        judge.model.eval()
        return judge


def train_judge(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                test_labels: np.ndarray, config: JudgeConfig | None = None, progress: bool = True) -> tuple[ImageJudge, float]:
    """Train on real images with light augmentation (random shifts); return the judge and its held-out accuracy.

    Raises `JudgeTooWeakError` if the held-out accuracy is below `config.min_accuracy`.
    """
    from .fit import fit_on_shifted_images

    config = config or JudgeConfig()
    torch.manual_seed(config.seed)
    judge = ImageJudge(config)
    x = _to_tensor(train_images, config.image_size)
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"got {len(x)} training images and {len(y)} labels; both must be equal and > 0.")
    fit_on_shifted_images(judge.model, x, lambda batch, index: F.cross_entropy(judge.model(batch), y[index],
                                                                               label_smoothing=0.05),
                          epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=0.05,
                          seed=config.seed, desc="judge", progress=progress)
    accuracy = judge.accuracy(test_images, test_labels)
    if accuracy < config.min_accuracy:
        raise JudgeTooWeakError(
            f"the judge reached {accuracy:.3f} on real held-out images, below min_accuracy={config.min_accuracy}; "
            "train longer (epochs) or pick another arch before trusting its verdicts."
        )
    return judge, accuracy
