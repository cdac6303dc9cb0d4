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
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

from unimask.atomic import atomic_write_text

LATEST = "LATEST"
COMPLETE = "complete.json"


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a checkpoint that fails its checks; the message says which and why."""


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below `folder` (but `complete.json`), by relative path."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[str(path.relative_to(folder))] = digest.hexdigest()
    return digests


def write_marker(directory: Path, tag: str, step: int, keep_last: int) -> None:
    """Mark `tag` complete (with its files' checksums), point LATEST at it, then drop the oldest beyond keep_last."""
    atomic_write_text(directory / tag / COMPLETE, json.dumps({"step": step, "files": file_digests(directory / tag)},
                                                             indent=1))
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
    found = file_digests(Path(directory) / tag)
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

