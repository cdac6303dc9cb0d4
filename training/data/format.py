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
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import get_worker_info

from unimask.atomic import atomic_write_text
from unimask.errors import InputError

CARD_FILE = "dataset.json"
MAX_IMAGE_SIZE = 1024  # pixels on a side of a written image: a larger one is a typo, and fills memory first
SKIP_REASONS = ("tar_error", "missing_key", "undecodable", "bad_shape", "too_long")
_LOG_LIMIT = 100  # per process: skips logged one by one before switching to a summary every 1000
CARD_FORMAT = "unimask-shards/1"
SPLITS = ("train", "test")
logger = logging.getLogger(__name__)
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class DataError(InputError):
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


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


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

    def shard_counts(self) -> dict[str, int]:
        """Samples written per shard file (absolute paths)."""
        return dict(self._per_shard)

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
            counts = {str(Path(f).relative_to(self.out_dir)): n for f, n in writer.shard_counts().items()}
            splits[split] = {"count": writer.count, "shards": shards, "shard_counts": counts}
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


# ----- reading -----------------------------------------------------------------------------------------------------
def _expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    lo, hi = match.group(1), match.group(2)
    width = len(lo)
    return [p for i in range(int(lo), int(hi) + 1)
            for p in _expand_braces(pattern[:match.start()] + str(i).zfill(width) + pattern[match.end():])]


def resolve_shards(dataset: str | Path, split: str = "train") -> tuple[list[str], dict[str, Any] | None]:
    """(shard paths, card or None) of a dataset folder's split, or of a shard pattern / list file."""
    path = Path(dataset)
    if path.is_dir():
        if (path / CARD_FILE).exists():
            card = read_card(path)
            if split not in card["splits"]:
                raise DataError(f"{path} has no split {split!r}; it has {sorted(card['splits'])}.")
            return [str(path / rel) for rel in card["splits"][split]["shards"]], card
        urls = sorted(str(p) for p in path.glob("*.tar"))
    elif any(ch in str(dataset) for ch in "*?["):
        urls = sorted(str(p) for p in Path("/").glob(str(path.resolve()).lstrip("/")))
    else:
        urls = [u for u in _expand_braces(str(dataset)) if Path(u).exists()]
    if not urls:
        raise DataError(f"no shards found at {dataset}; give a dataset folder (with {CARD_FILE}), a folder of .tar "
                        "files, a glob or a brace pattern.")
    return urls, None


def read_raw(urls: Sequence[str], on_error: Callable[[Exception], None] | None = None) -> Iterator[dict[str, Any]]:
    """Raw webdataset samples of `urls`, in order; a shard that cannot be read is reported to `on_error` (or raised)."""
    import webdataset as wds

    def handler(exn: Exception) -> bool:
        if on_error is None:
            raise exn
        on_error(exn)
        return True

    if urls:
        yield from wds.DataPipeline(wds.SimpleShardList(list(urls)), wds.tarfile_to_samples(handler=handler))


# ----- skip counting ----------------------------------------------------------------------------------------------
class SkipCounter:
    """Skipped samples per reason, and failed shard reads, shared between the DataLoader workers and the main process.

    Every count is of samples (a truncated shard adds the samples it lost, from the card's per-shard counts), except
    `shards`, the shard reads that failed. Backed by a shared-memory tensor with one row per worker (row 0: the main
    process), so workers never write the same cell and no lock is needed; read totals with `counts()` anywhere.
    """

    def __init__(self, rows: int = 257):  # the main process + up to 256 DataLoader workers
        self.table = torch.zeros(rows, len(SKIP_REASONS) + 1, dtype=torch.int64).share_memory_()
        self._logged = 0

    def _row(self) -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (self.table.shape[0] - 1)

    def add(self, reason: str, key: str, shard: str, message: str, samples: int = 1) -> None:
        self.table[self._row(), SKIP_REASONS.index(reason)] += samples
        self._logged += 1
        if self._logged <= _LOG_LIMIT:
            logger.warning("skipped %s in %s (%s): %s", f"{samples} samples" if key == "?" else f"sample {key}",
                           shard, reason, message)
        elif self._logged % 1000 == 0:
            logger.warning("%d skips so far in this process; latest: %s in %s (%s)", self._logged, key, shard, reason)

    def add_failed_shard(self) -> None:
        self.table[self._row(), len(SKIP_REASONS)] += 1

    def counts(self) -> dict[str, int]:
        """Skipped samples per reason, plus `shards`: failed shard reads."""
        totals = self.table.sum(0).tolist()
        return {**{reason: int(n) for reason, n in zip(SKIP_REASONS, totals)}, "shards": int(totals[-1])}

    def total(self) -> int:
        """Skipped samples in all."""
        return int(self.table[:, :len(SKIP_REASONS)].sum())


class ShardReads:
    """Reads shards one visit at a time and counts the samples each visit loses.

    Each visit of a shard (one item of the shard order: resampled training visits a shard again and again) gets its
    own tar reader. When the visit ends, the samples it did not give (the card's count for the shard minus those
    read) are counted as skipped `tar_error` samples and the visit as one failed shard read: a shard that fails at
    open, fails part way or ends early is counted at once, before the next shard is opened, and once per visit
    however many errors its reader raised. Without a card the loss of a failed visit is unknown (it is logged and
    counted as a failed read). With sample splitting (`consumer`, `consumers`), only this consumer's share of the
    lost samples is counted.
    """

    def __init__(self, urls: Sequence[str], card: dict[str, Any] | None, counter: "SkipCounter"):
        counts: dict[str, int] = {}
        for info in (card or {}).get("splits", {}).values():
            counts.update(info.get("shard_counts") or {})
        self.expected = {url: n for url in urls for rel, n in counts.items() if url.endswith(rel)}
        self.counter = counter

    def read(self, shards: Iterable[dict[str, Any]], consumer: int = 0, consumers: int = 1,
             on_error: Callable[[Exception], None] | None = None) -> Iterator[dict[str, Any]]:
        """Raw samples of each shard (`{"url": ...}` items) in turn; `on_error` sees every reading error first (it may
        raise to stop)."""
        import webdataset as wds

        for shard in shards:
            errors: list[Exception] = []

            def handler(exn: Exception) -> bool:
                if on_error is not None:
                    on_error(exn)
                errors.append(exn)
                return True  # go on: the visit ends, the next shard is read

            read = 0
            for sample in wds.tarfile_samples([dict(shard)], handler=handler):
                read += 1
                yield sample
            self._close(shard["url"], read, errors, consumer, consumers)

    def _close(self, url: str, read: int, errors: list[Exception], consumer: int, consumers: int) -> None:
        expected = self.expected.get(url)
        lost = 0 if expected is None else len(range(read + (consumer - read) % consumers, expected, consumers))
        if not errors and not lost:
            return
        self.counter.add_failed_shard()
        why = (f"{type(errors[0]).__name__}: {errors[0].args[0] if errors[0].args else errors[0]}" if errors
               else f"the shard ended after {read} of its {expected} samples")
        amount = str(lost) if expected is not None else "an unknown number of"
        self.counter.add("tar_error", "?", url, f"{why}; {amount} samples lost", samples=lost)
