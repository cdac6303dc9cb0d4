"""Files of a checkpoint: atomic writes (a crash mid-save never leaves a half-written file under the final name),
JSON reads whose errors name the file, and the SHA-256 digests that checkpoints and bundles record and verify."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import InputTypeError, MissingFileError


def as_path(value: Any, name: str) -> Path:
    """`value` (a str or path-like) as a Path; anything else raises `InputTypeError` naming the argument."""
    if not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"`{name}` must be a folder path (str or pathlib.Path), got {type(value).__name__} "
                             f"{value!r}.", key=name)
    return Path(value)


def file_digests(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file below `folder` by relative path (files named in `skip` left out)."""
    folder = Path(folder)
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in skip):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_torch_save(path: str | Path, state: Any) -> Path:
    """`torch.save` through `atomic_write`, via a file handle: torch names the archive inside after a path it is
    given, so saving to the random temporary name would make two identical states differ byte for byte."""
    import torch

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)

    return atomic_write(path, write)


def read_json(path: str | Path, error: type[Exception] = ValueError, what: str = "") -> Any:
    """The JSON value in `path`; a missing or invalid file raises `error` naming the file (and `what` it should be)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no {path.name} at {path.parent}{'; ' + what if what else ''}.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err}); the file is damaged or not {what or 'what unimask wrote'}.") \
            from None
