"""What may change when a run resumes: a run folder with a checkpoint continues with the state it saved, so a new
config must describe the same run.

- A setting that only steers what happens next is applied and recorded: the learning-rate schedule
  (`optim.lr`, `optim.min_lr_ratio`, `optim.warmup`, `train.steps`), logging, sampling and checkpoint cadence, the
  folder itself (a moved run) and the guards (`train.peak_flops`, `train.max_nonfinite_steps`).
- Any other change (the model, tokenizers, data, masking, optimizer, seed, precision, engine, ...) would make the
  saved state mean something else, so the resume is refused naming each such setting, before the checkpoint loads.

The comparison is against the run's `config.yaml`, the resolved config of its last start. Every resume appends a
line to `<run>/resumes.jsonl`: the step and checkpoint it resumed from and its `resume_changes`
(`{"optim.lr": {"from": 0.001, "to": 0.0005}}`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from unimask.config import to_dict
from unimask.errors import ConfigError
from unimask.training.checkpoints import complete_tags

RESUMES_FILE = "resumes.jsonl"
SAFE_ON_RESUME = ("optim.lr", "optim.min_lr_ratio", "optim.warmup", "train.steps", "train.log_every",
                  "train.checkpoint_every", "train.keep_last", "train.sample_every", "train.out", "train.peak_flops",
                  "train.max_nonfinite_steps")


def config_changes(old: dict[str, Any], config: Any) -> dict[str, dict[str, Any]]:
    """Settings of `config` (a config dataclass of sections) whose values differ from `old`, the plain dict of a
    saved config, by dotted key (`{"optim.lr": {"from": .., "to": ..}}`); a mapping or list setting compares whole.
    A setting `old` lacks (one a later version added) is not a change."""
    new = yaml.safe_load(yaml.safe_dump(to_dict(config), sort_keys=False))  # as config.yaml would hold it
    changes = {}
    for name, value in new.items():
        if dataclasses.is_dataclass(getattr(config, name)):
            saved = old.get(name)
            pairs = [(f"{name}.{key}", saved, key, item) for key, item in value.items()]
        else:
            pairs = [(name, old, name, value)]
        for dotted, saved, key, item in pairs:
            if isinstance(saved, dict) and key in saved and saved[key] != item:
                changes[dotted] = {"from": saved[key], "to": item}
    return changes


def check_resume(run: str | Path, config: Any) -> dict[str, dict[str, Any]]:
    """The settings `config` changes in a run folder that has a checkpoint to resume ({} for a new run); raises
    `ConfigError` naming every changed setting that is not safe to change on resume."""
    run = Path(run)
    saved = run / "config.yaml"
    if not complete_tags(run / "checkpoints") or not saved.is_file():
        return {}
    try:
        old = yaml.safe_load(saved.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{saved} is not valid YAML ({err}); it holds the config the run was trained with. "
                          f"Restore it, or start a new run in another train.out.") from None
    changes = config_changes(old if isinstance(old, dict) else {}, config)
    unsafe = [key for key in changes if key not in SAFE_ON_RESUME]
    if unsafe:
        listed = "; ".join(f"{key} ({changes[key]['from']!r} -> {changes[key]['to']!r})" for key in unsafe)
        raise ConfigError(f"{run} has a checkpoint to resume, but this config changes {listed}: the saved state "
                          "belongs to the old values. Set them back to resume, or start a new run in another "
                          f"train.out. Only {', '.join(SAFE_ON_RESUME)} may change on resume.", key=unsafe[0])
    return changes


def apply_learning_rate(scheduler: Any, lr: float, factor: Callable[[int], float]) -> None:
    """Make a resumed LambdaLR schedule follow the config's peak `lr` (a checkpoint restores the old one) and its
    current `factor`, from the step it resumed at."""
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)


def record_resume(run: str | Path, step: int, tag: str, changes: dict[str, dict[str, Any]]) -> None:
    """Append this resume and the settings it changed to `<run>/resumes.jsonl`, and say so."""
    with open(Path(run) / RESUMES_FILE, "a") as handle:
        handle.write(json.dumps({"step": step, "checkpoint": tag, "resume_changes": changes}) + "\n")
    if changes:
        listed = ", ".join(f"{key} {change['from']!r} -> {change['to']!r}" for key, change in changes.items())
        print(f"resumed with changed settings (recorded in {RESUMES_FILE}): {listed}")
