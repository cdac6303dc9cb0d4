"""Writing webdataset shard sets and their `dataset.json` card.

A dataset folder written by `unimask data ...` looks like:

    DIR/dataset.json              the card: source, counts, splits, image size, tasks, templates, command, seed
    DIR/train/<name>-000000.tar   train shards
    DIR/test/<name>-000000.tar    test shards (nothing from a test split is ever written to train)

Sample keys (DESIGN.md "Data and datasets"): `__key__` (no dots: webdataset splits the file name at the first dot),
`png` (RGB image), `txt` (caption or instruction), `actions.npy` (float32 [H, D]), `state.npy` (float32 [S]),
`json` (task, source, episode, step, ...). Pre-tokenized shards add `img_codes.npy` / `act_codes.npy`.

Each shard is written under a `.partial` name and renamed when complete; the card is written last (atomically),
so a folder with a `dataset.json` is a finished dataset and an interrupted run leaves no card behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from unimask.atomic import atomic_write_text

CARD_FILE = "dataset.json"
CARD_FORMAT = "unimask-shards/1"
SPLITS = ("train", "test")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class DataError(ValueError):
    """Bad input data or options for a dataset writer or reader; the message names the problem and the fix."""


# ----- encoding ---------------------------------------------------------------------------------------------------
def encode_png(image: np.ndarray | Image.Image) -> bytes:
    """Lossless PNG bytes of an RGB image (uint8 [H, W, 3] array or PIL image)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"images must be uint8 arrays of shape [H, W, 3], got {image.dtype} {tuple(image.shape)}.")
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 [H, W, 3] array from PNG (or any PIL-readable) bytes."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def content_hash(image: np.ndarray) -> str:
    """Hash of an image's pixels (and shape), used to keep identical content out of both splits."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise DataError(f"sample key {key!r} must use only letters, digits, '-' and '_' (webdataset splits at dots).")
    return key


def make_sample(key: str, *, image: np.ndarray | None = None, text: str | None = None,
                actions: np.ndarray | None = None, state: np.ndarray | None = None,
                meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> dict[str, Any]:
    """A webdataset sample dict with encoded values; extra `name=array` pairs become `name.npy` entries."""
    sample: dict[str, Any] = {"__key__": check_key(key)}
    if image is not None:
        sample["png"] = encode_png(image)
    if text is not None:
        sample["txt"] = text.encode("utf-8")
    if actions is not None:
        sample["actions.npy"] = encode_npy(np.asarray(actions, dtype=np.float32))
    if state is not None:
        sample["state.npy"] = encode_npy(np.asarray(state, dtype=np.float32))
    for name, array in arrays.items():
        sample[f"{name}.npy"] = encode_npy(np.asarray(array))
    if meta is not None:
        sample["json"] = encode_json(meta)
    return sample


# ----- writing ----------------------------------------------------------------------------------------------------
class ShardSetWriter:
    """Writes one split of a dataset as `DIR/<split>/<name>-%06d.tar` with `webdataset.ShardWriter`.

    Each shard is written as `<file>.partial` and renamed once closed, so a crash never leaves a truncated shard
    under a final name. Stale shards of an earlier run in the split folder are removed first.
    """

    def __init__(self, out_dir: str | Path, split: str, name: str, maxcount: int = 1000,
                 maxsize: float = 256e6):
        import webdataset as wds

        if maxcount < 1:
            raise DataError(f"`maxcount` (samples per shard) must be >= 1, got {maxcount}.")
        self.out_dir = Path(out_dir)
        self.split = split
        self.directory = self.out_dir / split
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in list(self.directory.glob("*.tar")) + list(self.directory.glob("*.tar.partial")):
            stale.unlink()
        self._handles: dict[str, Any] = {}
        self._per_shard: dict[str, int] = {}
        self._current: str | None = None
        self.count = 0
        self.keys: set[str] = set()
        pattern = str(self.directory / f"{name}-%06d.tar")
        # mtime=0 makes the tar bytes depend only on the samples (reproducible shards).
        self._writer = wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0, encoder=False,
                                       mtime=0, opener=self._open, post=self._finish)

    def _open(self, fname: str):
        handle = open(fname + ".partial", "wb")
        self._handles[fname] = handle
        self._per_shard[fname] = 0
        self._current = fname
        return handle

    def _finish(self, fname: str) -> None:
        handle = self._handles.pop(fname)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        if self._per_shard[fname] == 0:
            os.remove(fname + ".partial")
            del self._per_shard[fname]
        else:
            os.replace(fname + ".partial", fname)

    def write(self, sample: dict[str, Any]) -> None:
        key = sample["__key__"]
        if key in self.keys:
            raise DataError(f"duplicate sample key {key!r} in split {self.split!r}; keys must be unique.")
        self.keys.add(key)
        self._writer.write(sample)
        assert self._current is not None
        self._per_shard[self._current] += 1
        self.count += 1

    def close(self) -> list[str]:
        """Finish the last shard; returns the shard paths relative to the dataset folder."""
        self._writer.close()
        return sorted(str(Path(f).relative_to(self.out_dir)) for f in self._per_shard)

    def __enter__(self) -> "ShardSetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            return
        # On error: drop the partial shard, keep nothing that looks finished for this split.
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - the original exception matters more
            pass
        for handle in self._handles.values():
            handle.close()


class DatasetWriter:
    """Writes the train and test shard sets of one dataset folder and its card.

    Usage: `with DatasetWriter(out, "digits", maxcount=...) as w: w.write("train", sample); ...; w.finish(card)`.
    `finish` adds counts, shard lists, disk size and time to the card and writes `dataset.json` last.
    """

    def __init__(self, out_dir: str | Path, name: str, maxcount: int = 1000, splits: Iterable[str] = SPLITS,
                 started: float | None = None):
        self.out_dir = Path(out_dir)
        self.name = name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        card = self.out_dir / CARD_FILE
        if card.exists():
            card.unlink()  # the folder is being rewritten: it is not a finished dataset until the new card lands
        self.writers = {split: ShardSetWriter(self.out_dir, split, name, maxcount=maxcount) for split in splits}
        self.hashes: dict[str, set[str]] = {split: set() for split in self.writers}
        self.started = time.time() if started is None else started  # the card's `seconds` count from here

    def write(self, split: str, sample: dict[str, Any], image_hash: str | None = None) -> None:
        if split not in self.writers:
            raise DataError(f"unknown split {split!r}; splits are {sorted(self.writers)}.")
        if image_hash is not None:
            self.hashes[split].add(image_hash)
        self.writers[split].write(sample)

    def counts(self) -> dict[str, int]:
        return {split: w.count for split, w in self.writers.items()}

    def finish(self, card: dict[str, Any]) -> dict[str, Any]:
        splits = {}
        for split, writer in self.writers.items():
            shards = writer.close()
            splits[split] = {"count": writer.count, "shards": shards}
        train_keys, test_keys = (self.writers[s].keys for s in ("train", "test")) if "test" in self.writers else (
            set(), set())
        overlap = train_keys & test_keys
        if overlap:
            raise DataError(f"keys {sorted(overlap)[:5]} are in both train and test; the writer is broken.")
        total_bytes = sum(p.stat().st_size for p in self.out_dir.rglob("*.tar"))
        full = {
            "format": CARD_FORMAT,
            "name": self.name,
            **card,
            "splits": splits,
            "bytes": total_bytes,
            "seconds": round(time.time() - self.started, 2),
        }
        text = json.dumps(full, indent=2, sort_keys=False) + "\n"
        atomic_write_text(self.out_dir / CARD_FILE, text)
        return json.loads(text)  # exactly what a reader of the card gets (tuples become lists)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            for writer in self.writers.values():
                writer.__exit__(*exc)


# ----- reading the card -------------------------------------------------------------------------------------------
def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory)
    path = path / CARD_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"no {CARD_FILE} in {path.parent}; write the dataset with `unimask data <source> --out DIR` "
                        "(an interrupted write leaves no card).")
    card = json.loads(path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise DataError(f"{path} has format {card.get('format')!r}, expected {CARD_FORMAT!r}.")
    return card


def shard_paths(directory: str | Path, split: str) -> list[str]:
    """Absolute shard paths of one split of a dataset folder, from its card."""
    directory = Path(directory)
    card = read_card(directory)
    if split not in card["splits"]:
        raise DataError(f"{directory} has no split {split!r}; it has {sorted(card['splits'])}.")
    return [str(directory / rel) for rel in card["splits"][split]["shards"]]
