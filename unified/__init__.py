"""unimask: one masked discrete-diffusion Transformer for text, images and robot actions in one token space."""

from __future__ import annotations

import os

# Nothing in unimask downloads from a model hub; make transformers/diffusers fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"

from .config import Setting  # noqa: E402
from .errors import ConfigError, InputError, InputTypeError, MissingFileError, check_number  # noqa: E402
from .modality import Modality, Segment, TaskTemplate, VocabError  # noqa: E402
from .model import MaskedDiffusionConfig, MaskedDiffusionOutput, MaskedDiffusionTransformer, PrefixCache  # noqa: E402
from .registry import get_modality, get_task, register_modality, register_task  # noqa: E402
from .sequence import SequenceBatch, SequenceBuilder, TokenSequence, collate  # noqa: E402
from .vocab import UnifiedVocab  # noqa: E402

__all__ = [
    "ConfigError",
    "InputError",
    "InputTypeError",
    "MaskedDiffusionConfig",
    "MaskedDiffusionOutput",
    "MaskedDiffusionTransformer",
    "MissingFileError",
    "Modality",
    "PrefixCache",
    "Segment",
    "SequenceBatch",
    "SequenceBuilder",
    "Setting",
    "TaskTemplate",
    "TokenSequence",
    "UnifiedPipeline",
    "UnifiedVocab",
    "VocabError",
    "check_number",
    "collate",
    "get_modality",
    "get_task",
    "register_modality",
    "register_task",
]


def __getattr__(name: str):
    # The pipeline pulls in tokenizers (and diffusers for images): import it only when asked for.
    if name == "UnifiedPipeline":
        from .pipeline import UnifiedPipeline

        return UnifiedPipeline
    raise AttributeError(f"module 'unimask' has no attribute {name!r}")
