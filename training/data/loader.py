"""Streaming data loading: webdataset shards -> decoded samples -> task sequences -> mixed, collated batches.

Pipeline of one *stream* (one dataset feeding one task), built from webdataset stages:

    shard list (card or pattern) -> shard order (resampled forever, or one shuffled pass per epoch)
      -> node splitter (rank) -> worker splitter (DataLoader worker) -> tar reading (`tarfile_to_samples`)
      -> [sample splitter, when there are fewer shards than consumers] -> shuffle buffer
      -> decode + validate: every modality of the task's template reads its value (and pre-tokenized codes)
      -> the processor: codes for each segment, one batched tokenizer call per modality, then the template

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
(one row per worker, so counts from DataLoader workers reach the trainer: `loader.dataset.skipped()`). Losses are
counted in samples, per visit of a shard: a shard that fails at open, part way or ends early adds the samples its
card says it held minus those read, when the visit ends (`format.ShardReads`). It never stops training. A stream
that yields no valid sample at all after a full pass over its shards raises.

Decoded samples (`decode_sample`) are dicts: `key`, `shard`, `meta` (the json), and for every modality of the task
its value under the modality's name (`text`: a `TextSample`, `image`: uint8 [H, W, 3], `action`: float32 [H, D],
...) and its pre-tokenized codes under `<name>_codes` when the shard has them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unimask.modality import SampleError, TaskTemplate
from unimask.processor import Processor
from unimask.registry import get_modality, get_task
from unimask.sequence import SequenceError, TokenSequence, collate

from .config import DataConfig
from .format import DataError, ShardReads, SkipCounter, resolve_shards


# ----- splitting --------------------------------------------------------------------------------------------------
def resolve_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else from the arguments (default 0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world_size = (0 if rank is None else rank), (1 if world_size is None else world_size)
    if not 0 <= rank < world_size:
        raise DataError(f"`rank` must be in [0, world_size={world_size}), got {rank}.")
    return rank, world_size


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
def decode_sample(raw: dict[str, Any], template: TaskTemplate, card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decode and validate one raw webdataset sample for a task template; raises SampleError with a skip reason."""
    out: dict[str, Any] = {"key": raw.get("__key__", "?"), "shard": raw.get("__url__", "?"), "meta": {}}
    try:
        if "json" in raw:
            out["meta"] = json.loads(raw["json"])
            if not isinstance(out["meta"], dict):
                raise ValueError("json must hold an object")
    except ValueError as err:
        raise SampleError("undecodable", f"json: {err}") from None
    for segment in template.segments:
        modality = get_modality(segment.modality)
        if modality.name in out or f"{modality.name}_codes" in out:
            continue
        has_codes = modality.codes_key is not None and modality.codes_key in raw
        if not has_codes and not any(k in raw for k in modality.raw_keys):
            if segment.optional:
                continue
            present = sorted(k for k in raw if not k.startswith("__"))
            keys = (*modality.raw_keys, *((modality.codes_key,) if modality.codes_key else ()))
            raise SampleError("missing_key", f"needs one of {keys} for {template.name}, has {present}")
        try:
            if has_codes:
                out[f"{modality.name}_codes"] = modality.read_codes(raw[modality.codes_key])
            if any(k in raw for k in modality.raw_keys):
                out[modality.name] = modality.read(raw, out["meta"])
        except SampleError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoding failure of user data means: skip this sample
            raise SampleError("undecodable", f"{modality.name}: {type(err).__name__}: {err}") from None
        if modality.name in out:
            modality.check(out[modality.name], card or {})
    return out


# ----- one stream -------------------------------------------------------------------------------------------------
class SampleStream(IterableDataset):
    """Decoded, validated samples of one dataset for one task (the raw-sample stage; see the module docstring)."""

    def __init__(self, urls: Sequence[str], template: TaskTemplate | str, *, resampled: bool = True,
                 shard_shuffle: bool = True, shuffle_buffer: int = 1000, split_by: str = "auto", seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, counter: SkipCounter | None = None,
                 card: dict[str, Any] | None = None, name: str = ""):
        super().__init__()
        template = get_task(template) if isinstance(template, str) else template
        if not urls:
            raise DataError(f"stream {name or template.name} has no shards.")
        self.urls, self.template, self.resampled = list(urls), template, resampled
        self.shard_shuffle, self.shuffle_buffer, self.split_by = shard_shuffle, shuffle_buffer, split_by
        self.seed, self.card, self.name = seed, card, name or template.name
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.counter = counter if counter is not None else SkipCounter()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Non-resampled mode: a new epoch reshuffles the shard order and the buffers (same for all ranks)."""
        self.epoch = epoch

    def _tar_error(self, exn: Exception) -> None:
        self._tar_errors_in_a_row += 1
        if self.resampled and self._tar_errors_in_a_row > 2 * len(self.urls) + 10:
            raise DataError(f"stream {self.name}: {self._tar_errors_in_a_row} shard reads in a row failed and no "
                            f"sample was read; are the shards ({self.urls[:3]}...) readable?")

    def _pipeline(self) -> Any:
        import webdataset as wds

        worker, num_workers = _worker()
        consumers = self.world_size * num_workers
        by_sample = not self.resampled and (
            self.split_by == "sample" or (self.split_by == "auto" and len(self.urls) < consumers))
        stages: list[Any] = [ShardOrder(self.urls, self.resampled, self.shard_shuffle, self.seed, self.epoch)]
        if not by_sample:
            stages += [node_splitter(self.rank, self.world_size), worker_splitter]
        reads = ShardReads(self.urls, self.card, self.counter)
        share = (self.rank * num_workers + worker, consumers) if by_sample else (0, 1)
        stages.append(lambda src: reads.read(src, *share, on_error=self._tar_error))
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
                                    f"{self.template.name}; see the skipped-sample log for the reasons.")
            try:
                sample = decode_sample(raw, self.template, self.card)
            except SampleError as err:
                self.counter.add(err.reason, raw.get("__key__", "?"), str(url), str(err))
                continue
            good += 1
            yield sample


# ----- tasks ------------------------------------------------------------------------------------------------------
def task_sequences(samples: Iterable[dict[str, Any]], task: str, processor: Processor, text_choice: str,
                   batch: int, counter: SkipCounter, rng: np.random.Generator) -> Iterator[TokenSequence]:
    """TokenSequences of decoded samples, `batch` samples per processor call (so on-the-fly tokenizers batch)."""
    template = processor.template(task)

    def flush(pending: list[dict[str, Any]]) -> Iterator[TokenSequence]:
        rows, codes = [], []
        for sample in pending:
            row = []
            for segment in template.segments:
                modality = get_modality(segment.modality)
                value = sample.get(modality.name)
                how = text_choice if text_choice in modality.choices else ""
                row.append(None if value is None else modality.select(value, how, rng))
            rows.append(row)
            codes.append([sample.get(f"{s.modality}_codes") for s in template.segments])
        for sample, result in zip(pending, processor.sequences(task, rows, codes)):
            if isinstance(result, SequenceError):
                counter.add("too_long", sample["key"], sample["shard"], str(result))
            elif isinstance(result, Exception):  # codes outside the vocabulary, a tokenizer refusing the input, ...
                counter.add("bad_shape", sample["key"], sample["shard"], f"{type(result).__name__}: {result}")
            else:
                yield result

    pending: list[dict[str, Any]] = []
    for sample in samples:
        pending.append(sample)
        if len(pending) >= batch:
            yield from flush(pending)
            pending = []
    if pending:
        yield from flush(pending)


# ----- mixing -----------------------------------------------------------------------------------------------------
class MixedDataset(IterableDataset):
    """Weighted mix of task streams, yielding collated `SequenceBatch`es (use with `DataLoader(batch_size=None)`)."""

    def __init__(self, config: DataConfig, processor: Processor, *, rank: int | None = None,
                 world_size: int | None = None, counter: SkipCounter | None = None):
        super().__init__()
        if not config.streams:
            raise DataError("`streams` is empty: list at least one {dataset, task, weight}.")
        self.config, self.processor = config, processor
        self.rank, self.world_size = resolve_rank_world(rank, world_size)
        self.counter = counter if counter is not None else SkipCounter()
        self.streams: list[SampleStream] = []
        for index, stream in enumerate(config.streams):
            urls, card = resolve_shards(stream.dataset, stream.split)
            # Every sample has text, so `lm` works on any dataset; the others need what the card says is there.
            if card is not None and stream.task != "lm" and stream.task not in card.get("tasks", [stream.task]):
                raise DataError(f"{stream.dataset} is made for tasks {card['tasks']} (and lm), not {stream.task!r}.")
            check_pretokenized(card, processor, stream.dataset)
            template = processor.template(stream.task)
            for segment in template.segments if card is not None else ():
                problem = get_modality(segment.modality).dataset_mismatch(
                    processor.tokenizers.get(segment.modality), card, processor.settings)
                if problem:
                    raise DataError(f"{stream.dataset} cannot train the {stream.task} task of this model: {problem}")
            self.streams.append(SampleStream(
                urls, template, resampled=config.resampled, shard_shuffle=config.shard_shuffle,
                shuffle_buffer=config.shuffle_buffer, split_by=config.split_by, seed=_seed(config.seed, index),
                rank=self.rank, world_size=self.world_size, counter=self.counter, card=card,
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
            choice = cfg.text if cfg.text != "auto" else ("random" if self.config.random_paraphrase else "stored")
            stream_rng = np.random.default_rng(_seed(self.config.seed, self.epoch, self.rank, worker, index, 47))
            iterators.append(task_sequences(stream, cfg.task, self.processor, choice, self.config.image_batch,
                                            self.counter, stream_rng))
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
        pad_id = self.processor.vocab.pad_id
        for sequence in self.sequences():
            batch.append(sequence)
            if len(batch) == self.config.batch_size:
                yield collate(batch, pad_id, pad_to_multiple_of=self.config.pad_multiple)
                batch = []
        if batch and not self.config.drop_last:
            yield collate(batch, pad_id, pad_to_multiple_of=self.config.pad_multiple)


def check_pretokenized(card: dict[str, Any] | None, processor: Processor, where: str) -> None:
    """Codes made by a tokenizer of another size would index the wrong vocabulary rows: refuse them."""
    made = ((card or {}).get("pretokenized") or {}).get("vocab_sizes") or {}
    for name, got in made.items():
        if processor.vocab.has(name) and got != processor.vocab.size_of(name):
            raise DataError(f"{where} was pre-tokenized with {got} {name} codes but the vocabulary has "
                            f"{processor.vocab.size_of(name)}; pre-tokenize again with the tokenizers of this model.")


def make_loader(config: DataConfig, processor: Processor, *, rank: int | None = None, world_size: int | None = None,
                **loader_kwargs: Any) -> DataLoader:
    """A DataLoader over `MixedDataset`; `loader.dataset.skipped()` returns the skip counts of all workers."""
    dataset = MixedDataset(config, processor, rank=rank, world_size=world_size)
    kwargs: dict[str, Any] = {"batch_size": None, "num_workers": config.num_workers}
    if config.num_workers > 0:
        kwargs["persistent_workers"] = config.resampled
    kwargs.update(loader_kwargs)
    return DataLoader(dataset, **kwargs)


def iterate_samples(dataset: str | Path, split: str = "train", task: str = "lm", **kwargs: Any
                    ) -> Iterator[dict[str, Any]]:
    """One ordered pass over a dataset's decoded samples (no shuffling), e.g. for inspection or evaluation."""
    urls, card = resolve_shards(dataset, split)
    kwargs.setdefault("card", card)
    stream = SampleStream(urls, task, resampled=False, shard_shuffle=False, shuffle_buffer=0, **kwargs)
    return iter(stream)

