"""The exported inference folder: the model and its processor, saved and loaded together.

Layout of a bundle folder (what `unimask export` writes and `UnifiedPipeline.from_pretrained` reads):

    config.json, model.safetensors   the MaskedDiffusionTransformer (so `from_pretrained(dir)` works on it directly)
    vocab.json                       the UnifiedVocab layout
    unimask.json                     format, sequence settings, the tokenizers present, and what training used:
                                     each modality's mask schedule, the decoding defaults that follow from it, and
                                     the tasks trained
    <modality>_tokenizer/            one folder per modality's tokenizer (text_tokenizer/, image_tokenizer/, ...)
    checksums.json                   the SHA-256 of every other file, written last

Loading first checks every file against `checksums.json` (a damaged or edited file is refused by name), then every
tokenizer against the vocabulary, the weights for NaN or infinite values, and the sequence settings against the
model (each trained task's longest sequence must fit `max_seq_len`); a folder whose parts were not made together is
refused. Paths inside a bundle are relative to it, so a bundle loads wherever it is copied or moved.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import as_path, atomic_write_text, file_digests, read_json
from .errors import InputError, MissingFileError
from .model import CONFIG_FILE, WEIGHTS_FILE, MaskedDiffusionTransformer
from .modality import VocabError
from .processor import Processor
from .registry import get_modality, tasks
from .schedulers import scheduler_options
from .vocab import VOCAB_FILE, UnifiedVocab

SETTINGS_FILE = "unimask.json"
CHECKSUMS_FILE = "checksums.json"
BUNDLE_FORMAT = "unimask-bundle/2"
SETTINGS_KEYS = {"format", "sequence", "tokenizers", "mask_schedules", "decoding", "tasks"}


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
    tasks: list[str] = field(default_factory=list)  # the tasks the model was trained on (empty: not recorded)

    def __post_init__(self) -> None:
        if not self.decoding:
            self.decoding = decoding_defaults(self.vocab, self.mask_schedules)

    @property
    def vocab(self) -> UnifiedVocab:
        return self.processor.vocab

    def validate(self) -> None:
        """Raise `VocabError` naming the part that disagrees with the vocabulary, or `InputError` when a trained task's
        sequences no longer fit the model."""
        self.processor.validate()
        if self.model.config.vocab_size != self.vocab.size:
            raise VocabError(f"the model has {self.model.config.vocab_size} embedding rows but the vocabulary has "
                             f"{self.vocab.size} ids.")
        for name, _ in self.vocab.modalities:
            if not get_modality(name).continuous:
                continue
            spec = self.model.config.encoders.get(name)
            want = {"id": self.vocab.range_of(name)[0], "tokens": self.processor.length(name)}
            have = spec and {"id": spec.get("id"), "tokens": self.model.encoders[name].config.total_tokens}
            if have != want:
                raise VocabError(f"the vocabulary reads {name} through an encoder with {want}, but the model's "
                                 f"encoders[{name!r}] is {spec}; the model and its processor were not made together.")
        for task in (name for name in self.tasks if name in tasks()):
            length, limit = self.processor.sequence_length(task), self.model.config.max_seq_len
            if length > limit:
                raise InputError(f"the model was trained on {task} sequences, but these sequence settings "
                                 f"({self.processor.settings}) make them {length} tokens, more than its max_seq_len of "
                                 f"{limit}: the settings are not the ones the model was trained with.")

    def save(self, directory: str | Path) -> Path:
        self.validate()
        broken = [name for name, p in self.model.named_parameters() if not bool(p.isfinite().all())]
        if broken:
            raise InputError(f"the model has non-finite parameters ({broken[:3]}{' ...' if len(broken) > 3 else ''}); "
                             "it would only write garbage. Export an earlier checkpoint (unimask export RUN --tag).")
        directory = Path(directory)
        (directory / CHECKSUMS_FILE).unlink(missing_ok=True)  # a folder being rewritten is not a verified bundle
        self.model.save_pretrained(directory)
        settings = {"format": BUNDLE_FORMAT, **self.processor.save(directory),
                    "mask_schedules": self.mask_schedules, "decoding": self.decoding, "tasks": list(self.tasks)}
        atomic_write_text(directory / SETTINGS_FILE, json.dumps(settings, indent=2))
        digests = file_digests(directory, skip=(CHECKSUMS_FILE,))
        atomic_write_text(directory / CHECKSUMS_FILE, json.dumps({"sha256": digests}, indent=1))
        return directory


def verify_files(directory: Path) -> None:
    """Refuse a bundle whose files differ from the checksums written at export, naming them; a bundle exported
    before checksums were written loads with a warning."""
    if not (directory / CHECKSUMS_FILE).is_file():
        warnings.warn(f"{directory} has no {CHECKSUMS_FILE} (exported by an earlier unimask): its files cannot be "
                      "verified. Export it again to add checksums.", stacklevel=3)
        return
    recorded = read_json(directory / CHECKSUMS_FILE, InputError, "the checksums of a unimask bundle")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), dict):
        raise InputError(f"{directory / CHECKSUMS_FILE} is not a checksum list; export the bundle again.")
    found = file_digests(directory, skip=(CHECKSUMS_FILE,))
    missing = sorted(name for name in recorded["sha256"] if name not in found)
    changed = sorted(name for name, digest in recorded["sha256"].items() if name in found and found[name] != digest)
    if missing:
        raise MissingFileError(f"{directory} lacks {', '.join(missing)}, listed in its {CHECKSUMS_FILE}; copy the "
                               "whole exported folder.")
    if changed:
        raise InputError(f"{', '.join(changed)} in {directory} changed since export (SHA-256 differs from "
                         f"{CHECKSUMS_FILE}): the file is damaged or was edited. Export the bundle again.")


def load_bundle(directory: str | Path, map_location: str = "cpu") -> Bundle:
    """Load and cross-check every part of a bundle folder."""
    directory = as_path(directory, "directory")
    if not directory.is_dir():
        raise MissingFileError(f"checkpoint folder {directory} does not exist; give a folder written by `unimask "
                               "export` (or a run's model/ folder).")
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, SETTINGS_FILE):
        if not (directory / name).exists():
            raise MissingFileError(f"{directory} has no {name}; export a complete folder with `unimask export`.")
    verify_files(directory)
    saved = read_json(directory / SETTINGS_FILE, InputError, "a unimask bundle's settings")
    if not isinstance(saved, dict) or saved.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{directory / SETTINGS_FILE} is not a {BUNDLE_FORMAT} file; the folder was exported by "
                         "another unimask version. Export it again with this version.")
    unknown = set(saved) - SETTINGS_KEYS
    if unknown:
        raise InputError(f"{directory / SETTINGS_FILE} has unknown keys {sorted(unknown)}.")
    processor = Processor.load(directory, saved)
    model = MaskedDiffusionTransformer.from_pretrained(directory, map_location=map_location).eval()
    bundle = Bundle(model, processor, saved.get("mask_schedules") or {}, saved.get("decoding") or {},
                    list(saved.get("tasks") or ()))
    try:
        bundle.validate()
    except InputError as err:
        raise type(err)(f"{directory}: {err}") from None
    return bundle
