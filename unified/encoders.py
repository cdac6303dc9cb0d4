"""Encoders of continuous conditions: the model embeds them at placeholder positions instead of through its table.

An image that is only read (the caption source, the robot observation) need not pass through the VQ codebook:
understanding works best from continuous features of the raw pixels, while generation needs discrete codes (Janus,
Show-o2; Discrete Diffusion VLA conditions its action decoder on continuous vision features). `ConvPixelEncoder` is
a small convolutional stem trained end to end with the Transformer:

    uint8 (B, 3, R, R) -> [random shift, training only] -> conv k4 s2 -> (conv k3 s2) x n -> 1x1 to d_model
      -> adaptive average pool to a sqrt(tokens) x sqrt(tokens) grid -> + learned position per cell -> (B, tokens, d)
      [+ `keypoints` tokens from spatial-softmax keypoints of the last feature map, for sub-cell positions]

Random shift (DrQ: pad by replicating the border, crop back at a random offset) is the augmentation that helps
behaviour cloning from few demonstrations most; it is applied per image, in training mode only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError, check_choice, check_integer_fields, check_number

MAX_RESOLUTION = 1024  # pixels on a side of an encoder's input


@dataclass
class PixelEncoderConfig:
    resolution: int = 64  # side of the square input in pixels (the pixel preprocessor resizes to it)
    tokens: int = 16  # output tokens: a square grid (4 x 4, 8 x 8, ...) pooled from the last feature map
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # widths of the stride-2 convolutions
    shift: int = 4  # random-shift augmentation in pixels during training (0: off)
    keypoints: int = 0  # extra tokens made from spatial-softmax keypoints of the last feature map (0: none)
    id: int = -1  # the placeholder token id whose positions receive the encoder's tokens (set from the vocabulary)

    @property
    def total_tokens(self) -> int:
        """Placeholder positions a sequence reserves: the grid tokens and the keypoint tokens."""
        return self.tokens + self.keypoints

    def __post_init__(self) -> None:
        check_integer_fields(self, (("resolution", 8, MAX_RESOLUTION, "the side the pixels are resized to"),
                                    ("tokens", 1, 4096, "a square number such as 16"),
                                    ("shift", 0, 64, "0 turns the augmentation off"),
                                    ("keypoints", 0, 64, "0 adds no keypoint tokens")))
        side = math.isqrt(self.tokens)
        if side * side != self.tokens:
            raise ConfigError(f"`tokens` must be a square number (4, 16, 64, ...), got {self.tokens}.", key="tokens")
        if not isinstance(self.channels, list) or not self.channels:
            raise ConfigError(f"`channels` must be a non-empty list of widths, got {self.channels!r}.", key="channels")
        for width in self.channels:
            check_number("channels", width, 1, 8192, integer=True, error=ConfigError)
        grid = self.resolution // 2 ** len(self.channels)
        if grid < side:
            raise ConfigError(f"{len(self.channels)} stride-2 convolutions leave a {grid}x{grid} map from "
                              f"{self.resolution} px, fewer cells than the {side}x{side} tokens; use fewer "
                              "`channels` entries or fewer tokens.", key="channels")


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image (B, C, H, W) shifted by up to `pad` pixels in x and y (border replicated), as DrQ does."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (batch,), device=images.device)
    dy = torch.randint(0, 2 * pad + 1, (batch,), device=images.device)
    rows = (dy[:, None] + torch.arange(height, device=images.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=images.device)[None])[:, None, None, :]
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows, cols]


class ConvPixelEncoder(nn.Module):
    def __init__(self, config: PixelEncoderConfig, d_model: int):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = 3
        for i, channels in enumerate(config.channels):
            kernel = 4 if i == 0 else 3
            layers += [nn.Conv2d(width, channels, kernel, stride=2, padding=1), nn.GroupNorm(8 if channels % 8 == 0
                       else 1, channels), nn.SiLU()]
            width = channels
        self.stem = nn.Sequential(*layers)
        self.project = nn.Conv2d(width, d_model, 1)
        self.side = math.isqrt(config.tokens)
        self.position = nn.Parameter(torch.zeros(config.total_tokens, d_model))
        if config.keypoints:
            self.keypoint_head = nn.Linear(2 * width, config.keypoints * d_model)
            self.keypoint_temperature = nn.Parameter(torch.ones(()))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 or float images (B, 3, R, R) -> tokens (B, tokens + keypoints, d_model)."""
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        x = x * 2 - 1
        if self.training and self.config.shift:
            x = random_shift(x, self.config.shift)
        features = self.stem(x.to(self.project.weight.dtype))  # (B, C, h, w)
        tokens = F.adaptive_avg_pool2d(self.project(features), self.side).flatten(2).transpose(1, 2)  # (B, T, d)
        if self.config.keypoints:
            tokens = torch.cat([tokens, self.keypoint_tokens(features)], dim=1)
        return tokens + self.position

    def keypoint_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Spatial-softmax keypoints (Levine et al.): per channel, the expected (x, y) of its activation over the
        map, which places an object to a fraction of a cell where pooling to a coarse grid cannot; a linear map
        turns the 2C coordinates into `keypoints` tokens. (B, C, h, w) -> (B, keypoints, d)."""
        batch, _, height, width = features.shape
        weights = torch.softmax(features.flatten(2).float() / self.keypoint_temperature, dim=-1)  # (B, C, h*w)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height, device=features.device),
                                torch.linspace(-1, 1, width, device=features.device), indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (h*w, 2)
        points = (weights @ grid).flatten(1).to(self.keypoint_head.weight.dtype)  # (B, 2C)
        return self.keypoint_head(points).view(batch, self.config.keypoints, -1)


def place_encoded(x: torch.Tensor, input_ids: torch.Tensor, name: str, values: torch.Tensor, encoder: nn.Module,
                  check: bool) -> torch.Tensor:
    """Embeddings `x` (B, L, d) with `encoder`'s tokens of `values` at the placeholder positions of `input_ids` (a row
    holds all of the encoder's tokens or none). With `check` (where reading values back is free: a CPU, inference)
    the placeholder counts are checked and only the rows that hold placeholders are encoded; without it every row
    is encoded and the tokens are gathered into place, so nothing waits for the device."""
    placeholders = input_ids == encoder.config.id  # (B, L)
    count = encoder.config.total_tokens
    if len(values) != len(input_ids):
        raise ValueError(f"{name} features have {len(values)} rows for a batch of {len(input_ids)}.")
    rows = None
    if check:
        counts = placeholders.sum(dim=1)
        if bool(((counts != 0) & (counts != count)).any()):
            raise ValueError(f"every row must hold {count} {name} placeholders or none, got "
                             f"{sorted(set(counts.tolist()))}.")
        rows = (counts > 0).nonzero().flatten()
        if len(rows) == 0:
            return x
    tokens = encoder(values if rows is None else values[rows]).to(x.dtype)  # (rows, tokens, d)
    if rows is not None:
        tokens = torch.zeros(len(x), count, x.shape[-1], dtype=x.dtype, device=x.device).index_copy(0, rows, tokens)
    order = (placeholders.cumsum(dim=1) - 1).clamp(0, count - 1)  # (B, L): which token goes where
    placed = tokens.gather(1, order[..., None].expand(-1, -1, x.shape[-1]))
    return torch.where(placeholders[..., None], placed, x)


ENCODERS = {"conv": (PixelEncoderConfig, ConvPixelEncoder)}


def encoder_config(spec: dict) -> Any:
    """The checked settings of a model config's `encoders[name]` entry (`kind` picks the encoder, the rest are its
    settings); a wrong kind, an unknown key or a bad value raises `ConfigError` naming it."""
    if not isinstance(spec, dict):
        raise ConfigError(f"an encoder entry must be a mapping of settings, got {spec!r}.")
    settings = dict(spec)
    config_class = ENCODERS[check_choice("kind", settings.pop("kind", "conv"), tuple(ENCODERS), error=ConfigError)][0]
    unknown = sorted(set(settings) - {f.name for f in fields(config_class)}, key=str)
    if unknown:
        raise ConfigError(f"unknown encoder setting {unknown[0]!r}; the known ones are "
                          f"{sorted(f.name for f in fields(config_class))}.", key=str(unknown[0]))
    return config_class(**settings)


def build_encoder(spec: dict, d_model: int) -> nn.Module:
    """The encoder a model config's `encoders[name]` entry describes."""
    return ENCODERS[spec.get("kind", "conv")][1](encoder_config(spec), d_model)
