"""Fine-tuning an exported bundle: its architecture, tokenizers (with the action statistics) and sequence settings
become the run's, its weights the start; optionally LoRA adapters on the attention and MLP projections, merged into
plain weights at export.

    init:
      bundle: runs/quickstart/model   # or: unimask train --config C --init-from runs/quickstart/model
      lora_rank: 8                    # 0 (default): every weight trains

The config's own `model`, `tokenizers` and `sequence` sections must then be left out (or agree with the bundle; a
tokenizer folder agrees when it holds the same files): a fine-tuned model reads and writes exactly the codes its
bundle did. A key left at its default value takes the bundle's value. New instructions need no new tokens (the text
tokenizer is byte-level BPE); data whose actions have another dimension than the bundle's policy are refused by the
loader's card check, since the action tokenizer's bins and statistics are per dimension. Actions outside the
bundle's fitted range are clipped (and warned about) like any out-of-range action.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from unimask.atomic import read_json
from unimask.bundle import SETTINGS_FILE
from unimask.config import to_dict
from unimask.errors import ConfigError, MissingFileError
from unimask.model import CONFIG_FILE, MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.processor import SequenceSettings, tokenizer_folder
from unimask.registry import get_modality

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ADAPTER = "default"


def _conflicts(section: str, given: Any, default: Any, bundle: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """Keys the config set to something other than both the default and the bundle's value."""
    given, default, bundle = (to_dict(values) for values in (given, default, bundle))
    out = []
    for name, value in given.items():
        if name not in skip and value != default[name] and value != bundle[name]:
            out.append(f"{section}.{name} = {value!r} (the bundle's: {bundle[name]!r})")
    return out


def _same_files(a: str | Path, b: str | Path | None) -> bool:
    """Whether two tokenizer folders hold the same files with the same bytes."""
    if b is None or not Path(a).is_dir():
        return False
    files = [sorted(p.relative_to(root) for p in Path(root).rglob("*") if p.is_file()) for root in (a, b)]
    return files[0] == files[1] and all((Path(a) / f).read_bytes() == (Path(b) / f).read_bytes() for f in files[0])


def resolve_bundle_init(config: Any) -> Any:
    """The train config with `init.bundle`'s architecture, tokenizer folders and sequence settings."""
    directory = Path(config.init.bundle)
    for name in (CONFIG_FILE, SETTINGS_FILE):
        if not (directory / name).is_file():
            raise MissingFileError(f"init.bundle: {directory} has no {name}; give a folder written by `unimask "
                                   "export` (or a run's model/ folder).", key="init.bundle")
    saved = read_json(directory / SETTINGS_FILE, ConfigError, "a unimask bundle's settings")
    model = MaskedDiffusionConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    sequence = SequenceSettings(**saved["sequence"])
    conflicts = _conflicts("model", config.model, MaskedDiffusionConfig(), model, skip=("vocab_size",))
    conflicts += _conflicts("sequence", config.sequence, SequenceSettings(), sequence)
    folders = {name: str(directory / tokenizer_folder(name)) for name in saved["tokenizers"]
               if not get_modality(name).continuous}
    conflicts += [f"tokenizers.{name} = {folder!r} (not the bundle's {name} tokenizer)"
                  for name, folder in config.tokenizers.items()
                  if folder and not _same_files(folder, folders.get(name))]
    if conflicts:
        raise ConfigError("init.bundle takes the architecture, tokenizers and sequence settings from "
                         f"{directory}, but the config sets " + "; ".join(conflicts) + ". Drop these keys: a "
                         "fine-tuned model must read and write the codes its bundle did.")
    return replace(config, model=replace(model, vocab_size=0), tokenizers=folders, sequence=sequence)


def load_bundle_weights(model: MaskedDiffusionTransformer, directory: str | Path) -> None:
    start = MaskedDiffusionTransformer.from_pretrained(directory, map_location="cpu")
    if start.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"init.bundle: {directory} has {start.config.vocab_size} vocabulary rows but its tokenizers "
                         f"make {model.config.vocab_size}; the bundle's parts were not made together.")
    model.load_state_dict(start.state_dict())


def add_lora(model: MaskedDiffusionTransformer, rank: int, alpha: float, dropout: float = 0.0) -> None:
    """Wrap the attention and MLP projections with LoRA adapters (peft) and freeze every other weight."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError(f"init.lora_rank needs peft ({err}); install it with pip install 'unimask[train]' or "
                          "pip install peft.") from None

    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                       target_modules=list(LORA_TARGETS)), model, adapter_name=_ADAPTER)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(".lora_" in name)


def merge_lora(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """A LoRA-wrapped model's state dict as the plain model's: W = W0 + (alpha / rank) * B @ A per projection.
    Works on any state (live, EMA, a checkpoint's, ZeRO-3 gathered), so every export path merges the same way."""
    merged: dict[str, torch.Tensor] = {}
    scale = alpha / rank
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if ".base_layer." not in key:
            merged[key] = value
            continue
        prefix, _, leaf = key.partition(".base_layer.")
        lora_a = state.get(f"{prefix}.lora_A.{_ADAPTER}.weight")
        lora_b = state.get(f"{prefix}.lora_B.{_ADAPTER}.weight")
        if leaf == "weight" and lora_a is not None and lora_b is not None:
            value = (value.float() + scale * (lora_b.float() @ lora_a.float())).to(value.dtype)
        merged[f"{prefix}.{leaf}"] = value
    return merged


def export_state(state: dict[str, torch.Tensor], init: Any) -> dict[str, torch.Tensor]:
    """The plain model's weights of a run's state (LoRA merged when the run trained adapters)."""
    return merge_lora(state, init.lora_rank, init.lora_alpha) if init.lora_rank else state


def trainable_summary(model: torch.nn.Module) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "fraction": trainable / max(total, 1)}

