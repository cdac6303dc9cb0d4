"""The exported inference folder: model, vocabulary, tokenizers and sequence settings, saved and loaded together.

Layout of a bundle folder (what `unimask export` writes and `UnifiedPipeline.from_pretrained` reads):

    config.json, model.safetensors   the MaskedDiffusionTransformer (so `from_pretrained(dir)` works on it directly)
    vocab.json                       the UnifiedVocab layout
    unimask.json                     BundleSettings: target lengths and shapes the model was trained with
    text_tokenizer/                  Hugging Face fast tokenizer with the unimask special tokens
    image_tokenizer/                 VQImageTokenizer (optional: absent if the model has no image codes)
    action_tokenizer/                BinActionTokenizer or FASTActionTokenizer with its statistics (optional)
    state_tokenizer/                 BinActionTokenizer for proprioceptive state (optional)

Loading checks every tokenizer against the vocabulary and refuses a folder whose parts were not made together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .model import CONFIG_FILE, WEIGHTS_FILE, MaskedDiffusionTransformer
from .sequence import SequenceBuilder
from .vocab import VOCAB_FILE, UnifiedVocab, VocabError

SETTINGS_FILE = "unimask.json"
PARTS = ("text_tokenizer", "image_tokenizer", "action_tokenizer", "state_tokenizer")


@dataclass
class BundleSettings:
    caption_length: int = 32  # fixed text target length (caption + <eos> + <pad>s)
    image_tokens: int = 64  # VQ codes per image (h * w)
    action_tokens: int = 32  # codes per action chunk in the target
    action_horizon: int = 8  # action steps per chunk
    action_dim: int = 4  # action dimensions
    state_dim: int = 0  # proprioceptive state dimensions (0: no state tokens)
    max_condition_text: int = 64  # longest prompt/instruction in tokens

    def builder(self, vocab: UnifiedVocab) -> SequenceBuilder:
        return SequenceBuilder(vocab, caption_length=self.caption_length, image_tokens=self.image_tokens,
                               action_tokens=self.action_tokens, max_condition_text=self.max_condition_text)


@dataclass
class Bundle:
    model: MaskedDiffusionTransformer
    vocab: UnifiedVocab
    settings: BundleSettings
    text_tokenizer: Any
    image_tokenizer: Any = None
    action_tokenizer: Any = None
    state_tokenizer: Any = None

    def builder(self) -> SequenceBuilder:
        return self.settings.builder(self.vocab)

    def validate(self) -> None:
        """Raise `VocabError` naming the part that disagrees with the vocabulary."""
        self.vocab.validate_text_tokenizer(self.text_tokenizer)
        if self.model.config.vocab_size != self.vocab.size:
            raise VocabError(f"the model has {self.model.config.vocab_size} embedding rows but the vocabulary has "
                             f"{self.vocab.size} ids.")
        for name, size_name, tokenizer in (("image_tokenizer", "image_codebook_size", self.image_tokenizer),
                                           ("action_tokenizer", "action_vocab_size", self.action_tokenizer),
                                           ("state_tokenizer", "state_bins", self.state_tokenizer)):
            want = getattr(self.vocab, size_name)
            if tokenizer is None:
                if want:
                    raise VocabError(f"the vocabulary has {want} ids for {size_name} but the bundle has no {name}/.")
                continue
            got = tokenizer.codebook_size if name == "image_tokenizer" else tokenizer.vocab_size
            if got != want:
                raise VocabError(f"{name} has {got} codes but the vocabulary's {size_name} is {want}; the checkpoint "
                                 "and this tokenizer were not made together.")

    def save(self, directory: str | Path) -> Path:
        self.validate()
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.vocab.save(directory)
        atomic_write_text(directory / SETTINGS_FILE, json.dumps(asdict(self.settings), indent=2))
        self.text_tokenizer.save_pretrained(str(directory / "text_tokenizer"))
        for name in PARTS[1:]:
            part = getattr(self, name)
            if part is not None:
                part.save_pretrained(directory / name)
        return directory


def load_bundle(directory: str | Path, map_location: str = "cpu") -> Bundle:
    """Load and cross-check every part of a bundle folder."""
    from unimask.tokenizers.text import load_text_tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {directory} does not exist.")
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, SETTINGS_FILE, "text_tokenizer"):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} has no {name}; export a complete folder with `unimask export`.")
    raw = json.loads((directory / SETTINGS_FILE).read_text())
    known = {f.name for f in fields(BundleSettings)}
    if set(raw) - known:
        raise ValueError(f"{directory / SETTINGS_FILE} has unknown keys {sorted(set(raw) - known)}.")
    vocab = UnifiedVocab.load(directory)
    parts: dict[str, Any] = {"text_tokenizer": load_text_tokenizer(directory / "text_tokenizer")}
    if (directory / "image_tokenizer").exists():
        from unimask.tokenizers.image import VQImageTokenizer

        parts["image_tokenizer"] = VQImageTokenizer.from_pretrained(directory / "image_tokenizer")
    for name in ("action_tokenizer", "state_tokenizer"):
        if (directory / name).exists():
            from unimask.tokenizers.action import load_action_tokenizer

            parts[name] = load_action_tokenizer(directory / name)
    model = MaskedDiffusionTransformer.from_pretrained(directory, map_location=map_location).eval()
    bundle = Bundle(model=model, vocab=vocab, settings=BundleSettings(**raw), **parts)
    bundle.validate()
    return bundle
