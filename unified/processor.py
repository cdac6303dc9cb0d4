"""The processor: one tokenizer per modality, the vocabulary they imply, and the task templates, in one object.

It is the only thing that turns inputs into token sequences, for training (the loader) and inference (the
pipeline) alike, so the two cannot drift apart; it saves and loads with the bundle (`<name>_tokenizer/` folders,
`vocab.json`, and its settings in `unimask.json`).

    processor = Processor.from_folders({"text": "tok/text", "image": "tok/vq"}, SequenceSettings(caption_length=24))
    sequence = processor.sequence("i2t", [image, None])      # one entry per template segment; None: all-[MASK] target
    captions = processor.decode("text", codes)                # codes [B, N] -> outputs
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .config import ConfigError, Setting
from .errors import MissingFileError
from .modality import SPECIAL_TOKENS, TaskTemplate, VocabError, special_token
from .registry import get_modality, get_task, modalities, tasks, vocab_modality
from .sequence import SequenceBuilder, SequenceError, TokenSequence
from .vocab import UnifiedVocab


# The sequence settings that belong to no modality: how task templates read their conditions and what they write.
CONDITIONS = Setting("conditions", dict[str, dict[str, list[str]]] | None, None,
                     "per task, a condition modality read as other modalities, e.g. {vla: {image: [pixels]}}")
TARGETS = Setting("targets", dict[str, list[str]] | None, None,
                  "per task, modalities written beside its target in the same pass, e.g. {vla: [future]} (foresight)")


def declared_settings() -> dict[str, Setting]:
    """Every key the `sequence:` section accepts: each registered modality's `sequence_settings`, and `conditions`."""
    declared: dict[str, Setting] = {}
    owners = {CONDITIONS.name: "the processor", TARGETS.name: "the processor"}
    for modality in modalities().values():
        for setting in modality.sequence_settings:
            if setting.name in owners:
                raise ValueError(f"modality {modality.name!r} declares sequence.{setting.name}, which "
                                 f"{owners[setting.name]} declares too; rename one of them.")
            declared[setting.name], owners[setting.name] = setting, f"modality {modality.name!r}"
    return {**declared, CONDITIONS.name: CONDITIONS, TARGETS.name: TARGETS}


class SequenceSettings:
    """The `sequence:` section: lengths and shapes, each declared by the modality that needs it (`Setting`), plus
    `conditions`. Values are attributes (`settings.caption_length`); every declared key not given takes its default,
    an undeclared key raises `ConfigError` naming it and the known ones. Immutable once validated.

        SequenceSettings(caption_length=24, action_horizon=8)
    """

    def __init__(self, **values: Any):
        declared = declared_settings()
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise ConfigError(f"unknown config key sequence.{unknown[0]}; the known keys here (`conditions` and the "
                              f"registered modalities' settings) are: {', '.join(sorted(declared))}.")
        self.__dict__.update({name: setting.validate(values.get(name, setting.default), "sequence")
                              for name, setting in declared.items()})

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> "SequenceSettings":
        """The settings of a parsed `sequence:` mapping (how `unimask.config` builds this section)."""
        return cls(**data)

    def to_config(self, modality_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The values as a plain dict; with `modality_names`, only `conditions` and those modalities' settings."""
        if modality_names is None:
            return copy.deepcopy(self.__dict__)
        keep = {CONDITIONS.name, TARGETS.name, *(setting.name for name in modality_names
                                   for setting in get_modality(name).sequence_settings)}
        return {name: copy.deepcopy(value) for name, value in self.__dict__.items() if name in keep}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"sequence settings cannot change once validated; to change {name}, build new ones: "
                             f"SequenceSettings(**{{**old.to_config(), {name!r}: value}}).")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SequenceSettings) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # compared by value, and `conditions` is a dict

    def __repr__(self) -> str:
        return f"SequenceSettings({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


def tokenizer_folder(name: str) -> str:
    """The bundle sub-folder of a modality's tokenizer."""
    return f"{name}_tokenizer"


class Processor:
    def __init__(self, tokenizers: Mapping[str, Any], settings: SequenceSettings,
                 vocab: UnifiedVocab | None = None):
        if "text" not in tokenizers or tokenizers["text"] is None:
            raise VocabError("a processor needs a text tokenizer: every task reads or writes text.")
        self.tokenizers = {name: tok for name, tok in tokenizers.items() if tok is not None}
        for name in self.tokenizers:
            get_modality(name)
        self.settings = settings
        if vocab is None:
            vocab = self._make_vocab([name for name in modalities() if name != "text" and name in self.tokenizers])
        self.vocab = vocab
        self.modality_names = [name for name, _ in vocab.modalities]  # the non-text modalities, in id order
        self.validate()
        names = ["text", *self.modality_names]
        # Modalities that share the ids of one of these (a future frame shares the image's) lay out like it.
        names += [name for name, modality in modalities().items() if modality.shares and modality.shares in names]
        lengths = {}
        for name in names:
            count = get_modality(name).num_tokens(self.tokenizers.get(vocab_modality(name)), settings)
            if count is not None:
                lengths[name] = count
        self.builder = SequenceBuilder(self.vocab, {name: get_modality(name) for name in names}, lengths,
                                       settings.caption_length, settings.max_condition_text)

    # ----- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_folders(cls, folders: Mapping[str, str | Path], settings: SequenceSettings,
                     encoders: Mapping[str, dict] | None = None) -> "Processor":
        """Load each modality's tokenizer from its folder (`{"text": dir, "image": dir, ...}`; empty = absent), and
        make the input preparation of each continuous modality from the model's `encoders` entries."""
        loaded = {name: get_modality(name).load_tokenizer(folder) for name, folder in folders.items() if folder}
        made = {name: get_modality(name).tokenizer_for(spec) for name, spec in (encoders or {}).items()}
        return cls({**loaded, **made}, settings)

    def _make_vocab(self, names: list[str]) -> UnifiedVocab:
        text = get_modality("text")
        sizes = [(name, get_modality(name).vocab_size(self.tokenizers[name])) for name in names]
        have = {"text", *(name for name, _ in sizes)}
        extra = [special_token(t.name) for t in tasks().values()
                 if all(s.modality in have for s in t.segments)]
        for name, _ in sizes:
            extra += [special_token(d) for d in get_modality(name).delimiters or ()]
        special = list(SPECIAL_TOKENS) + [t for t in dict.fromkeys(extra) if t not in SPECIAL_TOKENS]
        return UnifiedVocab(text.vocab_size(self.tokenizers["text"]), tuple(sizes), tuple(special))

    def validate(self) -> None:
        """Raise `VocabError` naming the tokenizer that disagrees with the vocabulary."""
        self.vocab.validate_text_tokenizer(self.tokenizers["text"])
        for name, size in self.vocab.modalities:
            if name not in self.tokenizers:
                raise VocabError(f"the vocabulary has {size} {name} ids but there is no {name} tokenizer "
                                 f"({tokenizer_folder(name)}/).")
            if name in self.tokenizers:
                self.vocab.validate_size(name, get_modality(name).vocab_size(self.tokenizers[name]))
        for name in self.tokenizers:
            if name != "text" and not self.vocab.has(name):
                raise VocabError(f"there is a {name} tokenizer but the vocabulary has no {name} ids.")
            get_modality(name).check_settings(self.tokenizers[name], self.settings)

    # ----- templates ----------------------------------------------------------------------------------------------
    def template(self, task: str) -> TaskTemplate:
        """The task's template as this processor lays it out (with the configured condition variants and extra
        targets)."""
        template = get_task(task)
        for modality, replacements in ((self.settings.conditions or {}).get(task) or {}).items():
            template = template.replace_condition(modality, *replacements)
        template = template.with_extra_targets(*((self.settings.targets or {}).get(task) or ()))
        missing = [s.modality for s in template.segments
                   if not s.optional and not self.vocab.has(vocab_modality(s.modality))]
        if missing:
            fix = " and ".join(f"model.encoders.{m}" if get_modality(m).continuous else f"tokenizers.{m}"
                               for m in missing)
            raise VocabError(f"task {task!r} needs {missing} ids, which this model's vocabulary lacks; train with "
                             f"{fix}.")
        return template

    def length(self, modality: str, target: bool = True) -> int:
        """Codes of a segment of `modality` (a padded text target: `caption_length`)."""
        if get_modality(modality).padded:
            return self.settings.caption_length if target else self.settings.max_condition_text
        return self.builder.length(modality)

    def sequence_length(self, task: str, target_copies: int = 1) -> int:
        """Tokens of the longest `task` sequence (its target repeated `target_copies` times, as training may), which
        the model's `max_seq_len` must hold: the task token, then each segment's delimiters and codes (a text
        condition at its longest, `max_condition_text`)."""
        template = self.template(task)
        total = 1
        for segment in template.segments:
            if self.vocab.has(vocab_modality(segment.modality)):
                target = segment in template.targets
                size = len(get_modality(segment.modality).delimiters or ()) + self.length(segment.modality, target)
                total += size * (target_copies if target else 1)
        return total

    # ----- encoding -----------------------------------------------------------------------------------------------
    def encode(self, modality: str, values: Sequence[Any]) -> list[Any]:
        """Codes (or, for a continuous modality, encoder inputs) of each value, in one batched call."""
        return get_modality(modality).encode(self.tokenizers.get(vocab_modality(modality)), list(values),
                                             self.settings)

    def sequences(self, task: str, rows: Sequence[Sequence[Any]], codes: Sequence[Sequence[Any]] | None = None
                  ) -> list[TokenSequence | Exception]:
        """One sequence per row; a row holds one value per template segment (None: an absent optional condition, or
        an all-[MASK] target), `codes` optionally the segment's ready codes (pre-tokenized shards). Values of one
        segment are encoded in one batch; a row whose encoding or layout fails gets its exception instead."""
        template = self.template(task)
        rows = [list(row) for row in rows]
        codes = [list(row) for row in codes] if codes is not None else [[None] * len(template.segments)] * len(rows)
        per_row: list[list[Any]] = [list(row) for row in codes]
        failed: dict[int, Exception] = {}
        for index, segment in enumerate(template.segments):
            todo = [r for r in range(len(rows)) if per_row[r][index] is None and rows[r][index] is not None]
            for r, encoded in zip(todo, self._encode_rows(segment.modality, [rows[r][index] for r in todo], failed,
                                                          todo)):
                per_row[r][index] = encoded
        out: list[TokenSequence | Exception] = []
        for r in range(len(rows)):
            if r in failed:
                out.append(failed[r])
                continue
            try:
                out.append(self._build(template, per_row[r]))
            except (SequenceError, VocabError, ValueError) as err:
                out.append(err)
        return out

    def _encode_rows(self, modality: str, values: list[Any], failed: dict[int, Exception], rows: list[int]
                     ) -> list[Any]:
        if not values:
            return []
        try:
            return self.encode(modality, values)
        except Exception:  # noqa: BLE001 - find and report the offending value(s), keep the rest
            encoded: list[Any] = []
            for r, value in zip(rows, values):
                try:
                    encoded.append(self.encode(modality, [value])[0])
                except Exception as err:  # noqa: BLE001 - a tokenizer refusing one input must not stop the batch
                    failed.setdefault(r, err)
                    encoded.append(None)
            return encoded

    def _build(self, template: TaskTemplate, codes: list[Any]) -> TokenSequence:
        features: dict[str, torch.Tensor] = {}
        placeholders: list[Any] = []
        for segment, value in zip(template.segments, codes):
            if value is not None and get_modality(segment.modality).continuous:
                features[segment.modality] = torch.as_tensor(value)
                value = np.zeros(self.builder.length(segment.modality), dtype=np.int64)
            placeholders.append(value)
        return self.builder.build(template, placeholders, features)

    def sequence(self, task: str, values: Sequence[Any], codes: Sequence[Any] | None = None) -> TokenSequence:
        """One sequence (see `sequences`); raises what `sequences` would return for the row."""
        result = self.sequences(task, [values], None if codes is None else [codes])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def decode(self, modality: str, codes: Any) -> Any:
        """Outputs of a modality (captions, images, actions in real units, ...) from its codes [B, N]."""
        codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        return get_modality(modality).decode(self.tokenizers.get(vocab_modality(modality)), codes, self.settings)

    # ----- persistence --------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the tokenizers and `vocab.json` into `directory`; returns the settings for `unimask.json`."""
        directory = Path(directory)
        self.vocab.save(directory)
        for name, tokenizer in self.tokenizers.items():
            tokenizer.save_pretrained(str(directory / tokenizer_folder(name)))
        return {"sequence": self.settings.to_config(["text", *self.modality_names]),
                "tokenizers": sorted(self.tokenizers)}

    @classmethod
    def load(cls, directory: str | Path, saved: Mapping[str, Any]) -> "Processor":
        """The processor `save` wrote, checked against its vocabulary."""
        directory = Path(directory)
        try:
            settings = SequenceSettings(**(saved.get("sequence") or {}))
        except ConfigError as err:
            raise ConfigError(f"{directory}: {err} (A bundle with a modality of your own loads once that modality "
                              "is registered.)") from None
        folders = {}
        for name in saved.get("tokenizers") or ():
            folder = directory / tokenizer_folder(name)
            if not folder.is_dir():
                raise MissingFileError(f"{directory} lists a {name} tokenizer but has no {folder.name}/; copy the "
                                        "whole exported folder.")
            folders[name] = get_modality(name).load_tokenizer(folder)
        return cls(folders, settings, UnifiedVocab.load(directory))
