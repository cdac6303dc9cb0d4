"""A small module's weights and its configuration dataclass in one folder: safetensors beside a JSON file, both
written atomically (the evaluation judge and the behaviour-cloning baseline keep theirs this way)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from unimask.atomic import atomic_write, atomic_write_text


def save_weights(directory: str | Path, module: torch.nn.Module, config: Any, weights_file: str,
                 config_file: str) -> Path:
    """`module`'s state dict to `directory/weights_file` and the dataclass `config` to `directory/config_file`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(directory / weights_file, lambda path: save_file(state, path))
    atomic_write_text(directory / config_file, json.dumps(asdict(config), indent=2))
    return directory


def load_weights(directory: str | Path, weights_file: str, config_file: str, how_to_make: str
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(the saved config as a dict, the state dict); `FileNotFoundError` saying `how_to_make` one when missing."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (config_file, weights_file):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} has no {name}; {how_to_make}.")
    return json.loads((directory / config_file).read_text()), load_file(str(directory / weights_file))
