"""The checkpoint protocol of a run folder: `<run>/checkpoints/<tag>/`, its `complete.json`, and `LATEST`.

- An engine writes a tag's files; then `complete.json` is written with the SHA-256 of every file of the tag, and
  only then is `LATEST` replaced (atomically) by the tag's name. A crash during a save leaves `LATEST` on the
  previous complete checkpoint.
- Before a checkpoint is loaded its files are checked against `complete.json`. A damaged one (truncated, emptied,
  bytes flipped) is reported and the newest intact checkpoint is used instead, with a warning naming both.
- `LATEST` must name a checkpoint folder inside `checkpoints/` (a bare tag, no path).
- Rotation keeps the newest `keep_last` complete checkpoints. The trainer never writes a checkpoint whose parameters
  are not finite, so rotation never removes the last finite one.
- Temporary files of an interrupted atomic write (`.<name>.<random>.tmp`) are removed when a run starts.
- The run keeps its own copy of the processor (`<run>/processor/`: every tokenizer, the vocabulary and the sequence
  settings), so `unimask export` of a run copied or moved anywhere needs nothing outside it.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from typing import Any

from unimask.atomic import atomic_write_text, file_digests, read_json
from unimask.errors import InputError, MissingFileError
from unimask.processor import Processor

LATEST = "LATEST"
COMPLETE = "complete.json"
PROCESSOR = "processor"  # <run>/processor/: the run's own copy of its tokenizers, vocabulary and sequence settings
PROCESSOR_SETTINGS = "processor.json"


class CheckpointError(InputError):
    """No usable checkpoint, or a checkpoint that fails its checks; the message says which and why."""


def write_marker(directory: Path, tag: str, step: int, keep_last: int) -> None:
    """Mark `tag` complete (with its files' checksums), point LATEST at it, then drop the oldest beyond keep_last."""
    files = file_digests(directory / tag, skip=(COMPLETE,))
    atomic_write_text(directory / tag / COMPLETE, json.dumps({"step": step, "files": files}, indent=1))
    atomic_write_text(directory / LATEST, tag)
    tags = complete_tags(directory)
    for old in tags[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(directory / old, ignore_errors=True)


def complete_tags(directory: Path) -> list[str]:
    """Tags with a `complete.json`, oldest first (tags are zero-padded step numbers)."""
    return sorted(p.parent.name for p in Path(directory).glob(f"*/{COMPLETE}"))


def damage(directory: Path, tag: str) -> str | None:
    """Why checkpoint `tag` cannot be trusted, or None when its files match their recorded checksums."""
    marker = Path(directory) / tag / COMPLETE
    try:
        recorded = json.loads(marker.read_text()).get("files")
    except (OSError, ValueError) as err:
        return f"its {COMPLETE} is unreadable ({err})"
    if recorded is None:
        return None  # written before checksums were recorded: nothing to compare
    found = file_digests(Path(directory) / tag, skip=(COMPLETE,))
    missing = sorted(set(recorded) - set(found))
    changed = sorted(name for name in recorded if name in found and found[name] != recorded[name])
    if missing or changed:
        return f"files {missing + changed} are missing or changed since it was written"
    return None


def latest_tag(directory: str | Path) -> str | None:
    """The checkpoint LATEST names, or None without one; LATEST must name a complete checkpoint inside `directory`."""
    directory = Path(directory)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    tag = pointer.read_text().strip()
    if not tag or Path(tag).name != tag or tag in (".", ".."):
        raise CheckpointError(f"{pointer} names {tag!r}, which is not a checkpoint folder inside {directory}; "
                              "it must hold a bare tag such as step00000500.")
    if not (directory / tag / COMPLETE).is_file():
        raise CheckpointError(f"{pointer} names {tag}, which has no {COMPLETE}; the checkpoint folder was edited by "
                              "hand.")
    return tag


def intact_tag(directory: str | Path) -> str | None:
    """The newest checkpoint (from LATEST down) whose files pass their checksums, or None when there is none at all.
    A damaged newer one is reported with a warning naming it and the one used instead."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    newest = latest_tag(directory)
    candidates = [t for t in reversed(complete_tags(directory)) if newest is None or t <= newest]
    problems = []
    for tag in candidates:
        reason = damage(directory, tag)
        if reason is None:
            if problems:
                warnings.warn(f"checkpoint {problems[0][0]} is damaged ({problems[0][1]}); resuming from {tag}, the "
                              "newest intact checkpoint.", stacklevel=2)
            return tag
        problems.append((tag, reason))
    if problems:
        listed = "; ".join(f"{tag}: {reason}" for tag, reason in problems)
        raise CheckpointError(f"every checkpoint in {directory} is damaged ({listed}); remove the folder to start "
                              "over.")
    return None


def remove_orphans(directory: str | Path) -> list[Path]:
    """Delete temporary files left by interrupted atomic writes below `directory`; returns what was removed."""
    removed = [p for p in Path(directory).rglob(".*.tmp") if p.is_file()] if Path(directory).is_dir() else []
    for path in removed:
        path.unlink()
    return removed



def save_run_processor(processor: Processor, run: str | Path) -> Path:
    """Write the run's own copy of `processor` into `<run>/processor/`."""
    folder = Path(run) / PROCESSOR
    settings = processor.save(folder)
    atomic_write_text(folder / PROCESSOR_SETTINGS, json.dumps(settings, indent=2))
    return folder


def run_processor(run: str | Path, config: Any) -> Processor:
    """The processor a run trained with: its own copy; a run written before runs kept one reads the tokenizer folders
    its config names (relative paths from the current folder)."""
    folder = Path(run) / PROCESSOR
    if (folder / PROCESSOR_SETTINGS).is_file():
        return Processor.load(folder, read_json(folder / PROCESSOR_SETTINGS, InputError, "a run's processor settings"))
    missing = [f"tokenizers.{name} = {path}" for name, path in config.tokenizers.items()
               if path and not Path(path).exists()]
    if missing:
        raise MissingFileError(f"{run} keeps no copy of its tokenizers ({PROCESSOR}/) and its config names folders "
                               f"that are not here: {'; '.join(missing)}. Run the command from the folder the run was "
                               "trained from, or resume the run once with this version to give it its copy.")
    return Processor.from_folders(config.tokenizers, config.sequence, config.model.encoders)
