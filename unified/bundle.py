"""The exported inference folder: the model and its processor, saved and loaded together.

Layout of a bundle folder (what `unimask export` writes and `UnifiedPipeline.from_pretrained` reads):

    config.json, model.safetensors   the MaskedDiffusionTransformer (so `from_pretrained(dir)` works on it directly)
    vocab.json                       the UnifiedVocab layout
    unimask.json                     format, sequence settings, the tokenizers present, and what training used:
                                     each modality's mask schedule and the decoding defaults that follow from it
    <modality>_tokenizer/            one folder per modality's tokenizer (text_tokenizer/, image_tokenizer/, ...)

Loading checks every tokenizer against the vocabulary and refuses a folder whose parts were not made together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text, read_json
from .model import CONFIG_FILE, WEIGHTS_FILE, MaskedDiffusionTransformer
from .modality import VocabError
from .processor import Processor
from .registry import get_modality
from .schedulers import scheduler_options
from .vocab import VOCAB_FILE, UnifiedVocab

SETTINGS_FILE = "unimask.json"
BUNDLE_FORMAT = "unimask-bundle/2"


def decoding_defaults(vocab: UnifiedVocab, mask_schedules: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per modality, the scheduler options training implies: a scheduler that walks a mask schedule (MaskGIT) walks
    the one its modality trained with."""
    defaults: dict[str, dict[str, Any]] = {}
    for name in ("text", *(n for n, _ in vocab.modalities)):
        modality = get_modality(name)
        options = dict(modality.scheduler_options)
        if "schedule" in scheduler_options(modality.scheduler) and name in mask_schedules:
            options["schedule"] = mask_schedules[name]
        defaults[name] = options
    return defaults


@dataclass
class Bundle:
    model: MaskedDiffusionTransformer
    processor: Processor
    mask_schedules: dict[str, str] = field(default_factory=dict)  # modality -> mask schedule the model trained with
    decoding: dict[str, dict[str, Any]] = field(default_factory=dict)  # modality -> default scheduler options

    def __post_init__(self) -> None:
        if not self.decoding:
            self.decoding = decoding_defaults(self.vocab, self.mask_schedules)

    @property
    def vocab(self) -> UnifiedVocab:
        return self.processor.vocab

    def validate(self) -> None:
        """Raise `VocabError` naming the part that disagrees with the vocabulary."""
        self.processor.validate()
        if self.model.config.vocab_size != self.vocab.size:
            raise VocabError(f"the model has {self.model.config.vocab_size} embedding rows but the vocabulary has "
                             f"{self.vocab.size} ids.")
        for name, _ in self.vocab.modalities:
            if not get_modality(name).continuous:
                continue
            spec = self.model.config.encoders.get(name)
            want = {"id": self.vocab.range_of(name)[0], "tokens": self.processor.length(name)}
            if spec is None or any(spec.get(key) != value for key, value in want.items()):
                raise VocabError(f"the vocabulary reads {name} through an encoder with {want}, but the model's "
                                 f"encoders[{name!r}] is {spec}; the model and its processor were not made together.")

    def save(self, directory: str | Path) -> Path:
        self.validate()
        broken = [name for name, p in self.model.named_parameters() if not bool(p.isfinite().all())]
        if broken:
            raise ValueError(f"the model has non-finite parameters ({broken[:3]}{' ...' if len(broken) > 3 else ''}); "
                             "it would only write garbage. Export an earlier checkpoint (unimask export RUN --tag).")
        directory = Path(directory)
        self.model.save_pretrained(directory)
        settings = {"format": BUNDLE_FORMAT, **self.processor.save(directory),
                    "mask_schedules": self.mask_schedules, "decoding": self.decoding}
        atomic_write_text(directory / SETTINGS_FILE, json.dumps(settings, indent=2))
        return directory


def load_bundle(directory: str | Path, map_location: str = "cpu") -> Bundle:
    """Load and cross-check every part of a bundle folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint folder {directory} does not exist.")
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, SETTINGS_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} has no {name}; export a complete folder with `unimask export`.")
    saved = read_json(directory / SETTINGS_FILE, ValueError, "a unimask bundle's settings")
    if not isinstance(saved, dict) or saved.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{directory / SETTINGS_FILE} is not a {BUNDLE_FORMAT} file; the folder was exported by "
                         "another unimask version. Export it again with this version.")
    unknown = set(saved) - {"format", "sequence", "tokenizers", "mask_schedules", "decoding"}
    if unknown:
        raise ValueError(f"{directory / SETTINGS_FILE} has unknown keys {sorted(unknown)}.")
    processor = Processor.load(directory, saved)
    model = MaskedDiffusionTransformer.from_pretrained(directory, map_location=map_location).eval()
    bundle = Bundle(model, processor, saved.get("mask_schedules") or {}, saved.get("decoding") or {})
    bundle.validate()
    return bundle
