"""Streaming data loading: webdataset shards -> decoded samples -> task sequences -> mixed, collated batches.

Pipeline of one *stream* (one dataset feeding one task), built from webdataset stages:

    shard list (card or pattern) -> shard order (resampled forever, or one shuffled pass per epoch)
      -> node splitter (rank) -> worker splitter (DataLoader worker) -> tar reading (`tarfile_to_samples`)
      -> [sample splitter, when there are fewer shards than consumers] -> shuffle buffer -> decode + validate
      -> tokenize (text ids, VQ codes, action codes; or pre-tokenized img_codes.npy / act_codes.npy)
      -> `SequenceBuilder` template (t2i / i2t / vla / lm)

`MixedDataset` draws from several streams with fixed weights and collates batches with `unimask.sequence.collate`;
`make_loader` wraps it in a `torch.utils.data.DataLoader`. A captioned image dataset feeds t2i and i2t by listing it
in two streams.

Splitting. Every consumer (rank r of W, DataLoader worker w of N) has index c = r * N + w of n = W * N. Shards are
one sequence that all consumers compute identically from the seed and the epoch; consumer c takes items c, c + n,
... (the node splitter takes every W-th item for its rank, the worker splitter every N-th of those). In
non-resampled mode the sequence is one (optionally shuffled) pass over the shards, so the consumers together read
every shard exactly once. With fewer shards than consumers (webdataset would raise "No samples found") the split
moves to samples (`split_by="auto"`): every consumer reads every shard and keeps every n-th sample, still exactly
once in total. In resampled mode (training) the sequence is an endless seeded draw of shards with replacement.
Rank and world size come from `torch.distributed` when it is initialised, else from the arguments.

Robustness. A truncated or unreadable shard, an undecodable image, a missing key, an array of the wrong shape or
a text too long for the template is skipped, logged (key and shard) and counted in a `SkipCounter` in shared memory
(one row per worker, so counts from DataLoader workers reach the trainer: `loader.dataset.skipped()`). It never
stops training. A stream that yields no valid sample at all after a full pass over its shards raises.

Decoded samples (`decode_sample`) are dicts with constant keys:
    key str, shard str, image uint8 [H, W, 3] or None, text str or None, texts list[str] (paraphrases),
    actions float32 [H, D] or None, valid_steps int or None, state float32 [S] or None,
    img_codes int64 [h, w] or None, act_codes int64 [...] or None, meta dict.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unimask.sequence import SequenceBuilder, SequenceError, TokenSequence, collate
from unimask.vocab import TASKS

from .format import CARD_FILE, DataError, read_card

logger = logging.getLogger(__name__)

SKIP_REASONS = ("tar_error", "missing_key", "undecodable", "bad_shape", "too_long")
# Keys each task needs (either alternative of a tuple is enough).
TASK_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "t2i": (("png", "jpg", "img_codes.npy"), ("txt",)),
    "i2t": (("png", "jpg", "img_codes.npy"), ("txt",)),
    "vla": (("png", "jpg", "img_codes.npy"), ("txt",), ("actions.npy", "act_codes.npy")),
    "lm": (("txt",),),
}
_MAX_WORKERS = 256
_LOG_LIMIT = 100  # per process: skips logged one by one before switching to a summary every 1000


class SampleError(Exception):
    """A sample that must be skipped; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ----- config -----------------------------------------------------------------------------------------------------
# How a stream picks the text of a sample with several paraphrases. "auto" follows `DataConfig.random_paraphrase`
# ("random" or "stored"). "first" gives a text *target* (i2t) one canonical wording: with a random paraphrase the
# model must spread what it learns about the image over every wording and position of the key word, which on
# small data slows learning the image condition several times over.
TEXT_CHOICES = ("auto", "random", "first", "stored")


@dataclass
class StreamConfig:
    dataset: str  # dataset folder with dataset.json, or a shard list/pattern ("dir/*.tar", "a-{000..009}.tar")
    task: str  # template built from each sample: t2i, i2t, vla or lm
    weight: float = 1.0  # relative share of this stream in the mix
    split: str = "train"  # which split of a dataset folder to read (ignored for shard patterns)
    text: str = "auto"  # "random" paraphrase each time, "first" paraphrase always, "stored" txt; "auto": see below

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"stream task must be one of {TASKS}, got {self.task!r}.")
        if self.text not in TEXT_CHOICES:
            raise DataError(f"stream text must be one of {TEXT_CHOICES}, got {self.text!r} for {self.dataset}.")
        if not self.weight > 0:
            raise DataError(f"stream weight must be > 0, got {self.weight} for {self.dataset} ({self.task}).")


@dataclass
class DataConfig:
    streams: list[StreamConfig] = field(default_factory=list)  # what to read and in which proportions
    batch_size: int = 16  # sequences per batch on each rank
    num_workers: int = 0  # DataLoader worker processes per rank (0 = read in the main process)
    resampled: bool = True  # True: endless seeded draw of shards (training); False: one pass per epoch (eval)
    shard_shuffle: bool = True  # non-resampled mode: shuffle the shard order every epoch
    shuffle_buffer: int = 1000  # samples in each stream's shuffle buffer (0 or 1 disables shuffling)
    split_by: str = "auto"  # "shard", "sample", or "auto" (sample only when shards < consumers)
    random_paraphrase: bool = True  # draw the caption/instruction among the sample's paraphrases each time
    image_batch: int = 32  # samples per image-tokenizer call when images are encoded on the fly
    seed: int = 0  # base seed of shard order, shuffle buffers and mixing (rank/worker/epoch derive from it)
    drop_last: bool = True  # drop a final partial batch (only happens in non-resampled mode)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"`batch_size` must be >= 1, got {self.batch_size}.")
        if self.num_workers < 0 or self.num_workers > _MAX_WORKERS:
            raise DataError(f"`num_workers` must be in [0, {_MAX_WORKERS}], got {self.num_workers}.")
        if self.split_by not in ("auto", "shard", "sample"):
            raise DataError(f"`split_by` must be 'auto', 'shard' or 'sample', got {self.split_by!r}.")
        if self.image_batch < 1:
            raise DataError(f"`image_batch` must be >= 1, got {self.image_batch}.")
        self.streams = [s if isinstance(s, StreamConfig) else StreamConfig(**s) for s in self.streams]


@dataclass
class Tokenizers:
    """What turns a decoded sample into codes. Unused parts may be None (a t2i-only mix needs no action tokenizer).

    text: a Hugging Face tokenizer (encoded without special tokens) or any callable str -> list[int].
    image: an object with `.encode(uint8 array [B, H, W, 3]) -> codes [B, h, w]` (e.g. VQImageTokenizer).
    action: an object with `.encode(chunk float [H, D]) -> codes` (BinActionTokenizer: [H, D]; FAST: pass
        `action_length` so every chunk gets a fixed number of codes, padded with the tokenizer's pad code).
    state: optional callable state float [S] -> codes; without it the vla template has no state segment.
    """

    text: Any = None
    image: Any = None
    action: Any = None
    action_length: int | None = None
    state: Callable[[np.ndarray], Any] | None = None

    def encode_text(self, text: str) -> list[int]:
        if self.text is None:
            raise DataError("this stream needs a text tokenizer: pass Tokenizers(text=...).")
        if hasattr(self.text, "convert_tokens_to_ids"):
            return list(self.text.encode(text, add_special_tokens=False))
        return list(self.text(text))

    def encode_images(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if self.image is None:
            raise DataError("these samples have no img_codes.npy, so an image tokenizer is needed: pass "
                            "Tokenizers(image=VQImageTokenizer...) or pre-tokenize with `unimask data pretokenize`.")
        codes = self.image.encode(np.stack(images))
        codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
        return [c.astype(np.int64) for c in codes]

    def encode_actions(self, actions: np.ndarray) -> np.ndarray:
        if self.action is None:
            raise DataError("these samples have no act_codes.npy, so an action tokenizer is needed: pass "
                            "Tokenizers(action=...) or pre-tokenize with `unimask data pretokenize`.")
        if self.action_length is not None:
            codes = self.action.encode(actions, length=self.action_length)
        else:
            codes = self.action.encode(actions)
        return np.asarray(codes, dtype=np.int64)


# ----- skip counting ----------------------------------------------------------------------------------------------
class SkipCounter:
    """Counts of skipped samples per reason, shared between the DataLoader workers and the main process.

    Backed by a shared-memory tensor with one row per worker (row 0: the main process), so workers never write the
    same cell and no lock is needed; read totals with `counts()` from any process.
    """

    def __init__(self, rows: int = _MAX_WORKERS + 1):
        self.table = torch.zeros(rows, len(SKIP_REASONS), dtype=torch.int64).share_memory_()
        self._logged = 0

    def add(self, reason: str, key: str, shard: str, message: str) -> None:
        info = get_worker_info()
        row = 0 if info is None else 1 + info.id % (self.table.shape[0] - 1)
        self.table[row, SKIP_REASONS.index(reason)] += 1
        self._logged += 1
        if self._logged <= _LOG_LIMIT:
            logger.warning("skipped sample %s in %s (%s): %s", key, shard, reason, message)
        elif self._logged % 1000 == 0:
            logger.warning("%d samples skipped so far in this process; latest: %s in %s (%s)", self._logged, key,
                           shard, reason)

    def counts(self) -> dict[str, int]:
        totals = self.table.sum(0).tolist()
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, totals)}

    def total(self) -> int:
        return int(self.table.sum())


# ----- shards and splitting ---------------------------------------------------------------------------------------
def resolve_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else from the arguments (default 0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world_size = (0 if rank is None else rank), (1 if world_size is None else world_size)
    if not 0 <= rank < world_size:
        raise DataError(f"`rank` must be in [0, world_size={world_size}), got {rank}.")
    return rank, world_size


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


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class ShardOrder(IterableDataset):
    """First stage: the shard sequence shared by all consumers (dicts `{"url": ...}`)."""

    def __init__(self, urls: Sequence[str], resampled: bool, shuffle: bool, seed: int, epoch: int):
        super().__init__()
        self.urls, self.resampled, self.shuffle, self.seed, self.epoch = list(urls), resampled, shuffle, seed, epoch

    def __iter__(self) -> Iterator[dict[str, str]]:
        rng = np.random.default_rng(_seed(self.seed, self.epoch, 17))
        if self.resampled:
            while True:
                yield {"url": self.urls[int(rng.integers(len(self.urls)))]}
        order = rng.permutation(len(self.urls)) if self.shuffle else range(len(self.urls))
        for i in order:
            yield {"url": self.urls[int(i)]}


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def node_splitter(rank: int, world_size: int) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """Explicit webdataset nodesplitter: rank r keeps items r, r + W, r + 2W, ..."""

    def split(src: Iterable[Any]) -> Iterator[Any]:
        for i, item in enumerate(src):
            if i % world_size == rank:
                yield item

    return split


def worker_splitter(src: Iterable[Any]) -> Iterator[Any]:
    """Explicit webdataset workersplitter: DataLoader worker w of N keeps items w, w + N, ..."""
    worker, num_workers = _worker()
    for i, item in enumerate(src):
        if i % num_workers == worker:
            yield item


def sample_splitter(rank: int, world_size: int) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """Keeps sample i when i % (W * N) == this consumer's index (used when shards are fewer than consumers)."""

    def split(src: Iterable[Any]) -> Iterator[Any]:
        worker, num_workers = _worker()
        consumer, consumers = rank * num_workers + worker, world_size * num_workers
        for i, item in enumerate(src):
            if i % consumers == consumer:
                yield item

    return split


# ----- decoding ---------------------------------------------------------------------------------------------------
def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@dataclass
class Expect:
    """Shapes a stream's samples must have (from the dataset card; None = not checked)."""

    image_size: tuple[int, int] | None = None
    action_dim: int | None = None
    horizon: int | None = None
    state_dim: int | None = None

    @classmethod
    def from_card(cls, card: dict[str, Any] | None) -> "Expect":
        if not card:
            return cls()
        size = card.get("image_size")
        single = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)
        return cls(tuple(size) if single else None, card.get("action_dim"), card.get("horizon"), card.get("state_dim"))


def decode_sample(raw: dict[str, Any], task: str, expect: Expect = Expect()) -> dict[str, Any]:
    """Decode and validate one raw webdataset sample for `task`; raises SampleError with a skip reason."""
    key, shard = raw.get("__key__", "?"), raw.get("__url__", "?")
    for options in TASK_KEYS[task]:
        if not any(k in raw for k in options):
            present = sorted(k for k in raw if not k.startswith("__"))
            raise SampleError("missing_key", f"needs one of {options} for {task}, has {present}")
    out: dict[str, Any] = {"key": key, "shard": shard, "image": None, "text": None, "texts": [], "actions": None,
                           "valid_steps": None, "state": None, "img_codes": None, "act_codes": None, "meta": {}}
    try:
        if "json" in raw:
            out["meta"] = json.loads(raw["json"])
            if not isinstance(out["meta"], dict):
                raise ValueError("json must hold an object")
        if "txt" in raw:
            out["text"] = raw["txt"].decode("utf-8").strip()
        if task != "lm":  # decode only what the task uses: lm reads text alone
            if "img_codes.npy" in raw:
                out["img_codes"] = _npy(raw["img_codes.npy"]).astype(np.int64)
            elif "png" in raw or "jpg" in raw:
                out["image"] = _image(raw.get("png") or raw["jpg"])
        if task == "vla":
            if "act_codes.npy" in raw:
                out["act_codes"] = _npy(raw["act_codes.npy"]).astype(np.int64)
            if "actions.npy" in raw:
                out["actions"] = _npy(raw["actions.npy"])
            if "state.npy" in raw:
                out["state"] = _npy(raw["state.npy"])
    except Exception as err:  # noqa: BLE001 - any decoding failure of user data means: skip this sample
        raise SampleError("undecodable", f"{type(err).__name__}: {err}") from None
    if out["text"] is not None and not out["text"]:
        raise SampleError("missing_key", "txt is empty")
    texts = out["meta"].get("captions") or out["meta"].get("instructions") or []
    out["texts"] = [t for t in texts if isinstance(t, str) and t.strip()] or ([out["text"]] if out["text"] else [])
    image = out["image"]
    if image is not None and expect.image_size is not None and tuple(image.shape[:2]) != tuple(expect.image_size):
        raise SampleError("bad_shape", f"image is {image.shape[:2]}, the dataset's images are {expect.image_size}")
    actions = out["actions"]
    if actions is not None:
        if actions.ndim != 2 or not np.issubdtype(actions.dtype, np.floating) or not np.all(np.isfinite(actions)):
            raise SampleError("bad_shape", f"actions.npy must be finite float [H, D], got {actions.dtype} "
                                           f"{actions.shape}")
        if expect.action_dim is not None and actions.shape[1] != expect.action_dim:
            raise SampleError("bad_shape", f"actions have {actions.shape[1]} dims, expected {expect.action_dim}")
        if expect.horizon is not None and actions.shape[0] != expect.horizon:
            raise SampleError("bad_shape", f"action chunk has {actions.shape[0]} steps, expected {expect.horizon}")
        out["actions"] = actions.astype(np.float32)
        out["valid_steps"] = int(out["meta"].get("valid_steps", actions.shape[0]))
    state = out["state"]
    if state is not None:
        if state.ndim != 1 or (expect.state_dim is not None and state.shape[0] != expect.state_dim):
            raise SampleError("bad_shape", f"state.npy must be [{expect.state_dim or 'S'}], got {state.shape}")
        out["state"] = state.astype(np.float32)
    return out


# ----- one stream -------------------------------------------------------------------------------------------------
class SampleStream(IterableDataset):
    """Decoded, validated samples of one dataset for one task (the raw-sample stage; see the module docstring)."""

    def __init__(self, urls: Sequence[str], task: str, *, resampled: bool = True, shard_shuffle: bool = True,
                 shuffle_buffer: int = 1000, split_by: str = "auto", seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, counter: SkipCounter | None = None, expect: Expect = Expect(),
                 name: str = ""):
        super().__init__()
        if not urls:
            raise DataError(f"stream {name or task} has no shards.")
        self.urls, self.task, self.resampled = list(urls), task, resampled
        self.shard_shuffle, self.shuffle_buffer, self.split_by = shard_shuffle, shuffle_buffer, split_by
        self.seed, self.expect, self.name = seed, expect, name or task
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.counter = counter if counter is not None else SkipCounter()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Non-resampled mode: a new epoch reshuffles the shard order and the buffers (same for all ranks)."""
        self.epoch = epoch

    def _tar_handler(self, exn: Exception) -> bool:
        args = [a for a in getattr(exn, "args", ()) if isinstance(a, str)]
        shard = next((a for a in reversed(args) if a.endswith(".tar") or "/" in a), "?")
        self.counter.add("tar_error", "?", shard, f"{type(exn).__name__}: {args[0] if args else exn}")
        self._tar_errors_in_a_row += 1
        if self.resampled and self._tar_errors_in_a_row > 2 * len(self.urls) + 10:
            raise DataError(f"stream {self.name}: {self._tar_errors_in_a_row} shard reads in a row failed and no "
                            f"sample was read; are the shards ({self.urls[:3]}...) readable?")
        return True  # keep going with the next file or shard

    def _pipeline(self) -> Any:
        import webdataset as wds

        _, num_workers = _worker()
        consumers = self.world_size * num_workers
        by_sample = not self.resampled and (
            self.split_by == "sample" or (self.split_by == "auto" and len(self.urls) < consumers))
        stages: list[Any] = [ShardOrder(self.urls, self.resampled, self.shard_shuffle, self.seed, self.epoch)]
        if not by_sample:
            stages += [node_splitter(self.rank, self.world_size), worker_splitter]
        stages.append(wds.tarfile_to_samples(handler=self._tar_handler))
        if by_sample:
            stages.append(sample_splitter(self.rank, self.world_size))
        if self.shuffle_buffer > 1:
            worker, _ = _worker()
            rng = random.Random(_seed(self.seed, self.epoch, self.rank, worker, 29))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._tar_errors_in_a_row = 0
        good, finished, current = 0, set(), None
        for raw in self._pipeline():
            self._tar_errors_in_a_row = 0
            url = raw.get("__url__")
            if url != current:
                if current is not None:
                    finished.add(current)
                current = url
                if self.resampled and good == 0 and len(finished) == len(self.urls):
                    raise DataError(f"stream {self.name}: every shard was read and no sample is usable for "
                                    f"{self.task}; see the skipped-sample log for the reasons.")
            try:
                sample = decode_sample(raw, self.task, self.expect)
            except SampleError as err:
                self.counter.add(err.reason, raw.get("__key__", "?"), str(url), str(err))
                continue
            good += 1
            yield sample


# ----- tasks ------------------------------------------------------------------------------------------------------
class TaskStream:
    """Turns decoded samples into `TokenSequence`s of one task (image tokenization batched)."""

    def __init__(self, task: str, builder: SequenceBuilder, tokenizers: Tokenizers, text_choice: str,
                 image_batch: int, counter: SkipCounter):
        if text_choice not in TEXT_CHOICES[1:]:
            raise DataError(f"`text_choice` must be one of {TEXT_CHOICES[1:]}, got {text_choice!r}.")
        self.task, self.builder, self.tok = task, builder, tokenizers
        self.text_choice, self.image_batch, self.counter = text_choice, image_batch, counter

    def _text(self, sample: dict[str, Any], rng: np.random.Generator) -> str:
        texts = sample["texts"]
        if self.text_choice == "random" and len(texts) > 1:
            return texts[int(rng.integers(len(texts)))]
        if self.text_choice == "first" and texts:
            return texts[0]
        return sample["text"]

    def _build(self, sample: dict[str, Any], codes: np.ndarray | None, rng: np.random.Generator) -> TokenSequence:
        task = self.task
        if task == "lm":
            return self.builder.lm(self.tok.encode_text(self._text(sample, rng)))
        if task == "t2i":
            return self.builder.t2i(self.tok.encode_text(self._text(sample, rng)), codes)
        if task == "i2t":
            return self.builder.i2t(codes, self.tok.encode_text(self._text(sample, rng)))
        actions = sample["act_codes"] if sample["act_codes"] is not None else self.tok.encode_actions(sample["actions"])
        state = None
        if self.tok.state is not None and sample["state"] is not None:
            state = self.tok.state(sample["state"])
        return self.builder.vla(codes, self.tok.encode_text(self._text(sample, rng)), actions, state)

    def __call__(self, samples: Iterable[dict[str, Any]], rng: np.random.Generator) -> Iterator[TokenSequence]:
        pending: list[dict[str, Any]] = []
        for sample in samples:
            if self.task == "lm" or sample["img_codes"] is not None:
                yield from self._emit([sample], [sample["img_codes"]], rng)
                continue
            pending.append(sample)
            if len(pending) >= self.image_batch:
                yield from self._emit(pending, self._encode(pending), rng)
                pending = []
        if pending:
            yield from self._emit(pending, self._encode(pending), rng)

    def _encode(self, samples: list[dict[str, Any]]) -> list[Any]:
        """VQ codes per sample, one encoder call per batch; None where the tokenizer refused an image."""
        images = [s["image"] for s in samples]
        if len({im.shape for im in images}) == 1:
            try:
                return self.tok.encode_images(images)
            except DataError:
                raise
            except Exception:  # noqa: BLE001 - retry one by one to find and skip the offending sample
                pass
        codes: list[Any] = []
        for sample in samples:
            try:
                codes.append(self.tok.encode_images([sample["image"]])[0])
            except DataError:
                raise
            except Exception as err:  # noqa: BLE001 - a tokenizer rejecting one image must not stop training
                self.counter.add("bad_shape", sample["key"], sample["shard"], f"image tokenizer: {err}")
                codes.append(None)
        return codes

    def _emit(self, samples: list[dict[str, Any]], codes: list[Any], rng: np.random.Generator
              ) -> Iterator[TokenSequence]:
        for sample, code in zip(samples, codes):
            if code is None and self.task != "lm":
                continue
            try:
                yield self._build(sample, code, rng)
            except SequenceError as err:
                self.counter.add("too_long", sample["key"], sample["shard"], str(err))
            except ValueError as err:  # codes outside the vocabulary, a tokenizer refusing the input, ...
                self.counter.add("bad_shape", sample["key"], sample["shard"], f"{type(err).__name__}: {err}")


# ----- mixing -----------------------------------------------------------------------------------------------------
class MixedDataset(IterableDataset):
    """Weighted mix of task streams, yielding collated `SequenceBatch`es (use with `DataLoader(batch_size=None)`)."""

    def __init__(self, config: DataConfig, builder: SequenceBuilder, tokenizers: Tokenizers, *,
                 rank: int | None = None, world_size: int | None = None, counter: SkipCounter | None = None):
        super().__init__()
        if not config.streams:
            raise DataError("`streams` is empty: list at least one {dataset, task, weight}.")
        self.config, self.builder, self.tokenizers = config, builder, tokenizers
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.counter = counter if counter is not None else SkipCounter()
        self.streams: list[SampleStream] = []
        for index, stream in enumerate(config.streams):
            urls, card = resolve_shards(stream.dataset, stream.split)
            # Every sample has text, so `lm` works on any dataset; the others need what the card says is there.
            if card is not None and stream.task != "lm" and stream.task not in card.get("tasks", TASKS):
                raise DataError(f"{stream.dataset} is made for tasks {card['tasks']} (and lm), not {stream.task!r}.")
            _check_pretokenized(card, builder, stream.dataset)
            self.streams.append(SampleStream(
                urls, stream.task, resampled=config.resampled, shard_shuffle=config.shard_shuffle,
                shuffle_buffer=config.shuffle_buffer, split_by=config.split_by, seed=_seed(config.seed, index),
                rank=self.rank, world_size=self.world_size, counter=self.counter, expect=Expect.from_card(card),
                name=f"{stream.dataset}:{stream.split}:{stream.task}"))
        weights = np.array([s.weight for s in config.streams], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for stream in self.streams:
            stream.set_epoch(epoch)

    def skipped(self) -> dict[str, int]:
        """Skipped samples per reason, summed over all workers (for the trainer's logs)."""
        return self.counter.counts()

    def sequences(self) -> Iterator[TokenSequence]:
        """The mixed stream of TokenSequences (unbatched) for this rank and worker."""
        worker, _ = _worker()
        rng = np.random.default_rng(_seed(self.config.seed, self.epoch, self.rank, worker, 43))
        iterators = []
        for index, (stream, cfg) in enumerate(zip(self.streams, self.config.streams)):
            text_choice = cfg.text
            if text_choice == "auto":
                text_choice = "random" if self.config.random_paraphrase else "stored"
            task = TaskStream(cfg.task, self.builder, self.tokenizers, text_choice, self.config.image_batch,
                              self.counter)
            stream_rng = np.random.default_rng(_seed(self.config.seed, self.epoch, self.rank, worker, index, 47))
            iterators.append(task(stream, stream_rng))
        active = list(range(len(iterators)))
        while active:
            p = self.weights[active] / self.weights[active].sum()
            pick = active[int(rng.choice(len(active), p=p))]
            try:
                yield next(iterators[pick])
            except StopIteration:
                active.remove(pick)

    def __iter__(self) -> Iterator[Any]:
        batch: list[TokenSequence] = []
        pad_id = self.builder.vocab.pad_id
        for sequence in self.sequences():
            batch.append(sequence)
            if len(batch) == self.config.batch_size:
                yield collate(batch, pad_id)
                batch = []
        if batch and not self.config.drop_last:
            yield collate(batch, pad_id)


def _check_pretokenized(card: dict[str, Any] | None, builder: SequenceBuilder, where: str) -> None:
    """Codes made by a tokenizer of another size would index the wrong vocabulary rows: refuse them."""
    made = (card or {}).get("pretokenized") or {}
    for name, want in (("codebook_size", builder.vocab.image_codebook_size),
                       ("action_vocab_size", builder.vocab.action_vocab_size)):
        got = made.get(name)
        if got is not None and got != want:
            raise DataError(f"{where} was pre-tokenized with {name}={got} but the vocabulary has {want}; "
                            "pre-tokenize again with the tokenizers of this model.")


def make_loader(config: DataConfig, builder: SequenceBuilder, tokenizers: Tokenizers, *, rank: int | None = None,
                world_size: int | None = None, **loader_kwargs: Any) -> DataLoader:
    """A DataLoader over `MixedDataset`; `loader.dataset.skipped()` returns the skip counts of all workers."""
    dataset = MixedDataset(config, builder, tokenizers, rank=rank, world_size=world_size)
    kwargs: dict[str, Any] = {"batch_size": None, "num_workers": config.num_workers}
    if config.num_workers > 0:
        kwargs["persistent_workers"] = config.resampled
    kwargs.update(loader_kwargs)
    return DataLoader(dataset, **kwargs)


def iterate_samples(dataset: str | Path, split: str = "train", task: str = "lm", **kwargs: Any
                    ) -> Iterator[dict[str, Any]]:
    """One ordered pass over a dataset's decoded samples (no shuffling), e.g. for inspection or evaluation."""
    urls, card = resolve_shards(dataset, split)
    kwargs.setdefault("expect", Expect.from_card(card))
    stream = SampleStream(urls, task, resampled=False, shard_shuffle=False, shuffle_buffer=0, **kwargs)
    return iter(stream)


__all__ = [
    "DataConfig", "Expect", "MixedDataset", "SampleError", "SampleStream", "SkipCounter", "StreamConfig",
    "TaskStream", "Tokenizers", "decode_sample", "iterate_samples", "make_loader", "node_splitter",
    "resolve_rank_world", "resolve_shards", "sample_splitter", "worker_splitter", "SKIP_REASONS",
]
