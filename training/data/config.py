"""The `data:` section of a train config: which datasets feed which tasks, in which proportions, and how they are
read. Every value is checked when the section is built, before any shard is opened."""

from __future__ import annotations

from dataclasses import dataclass, field

from unimask.errors import check_choice, check_integer_fields, check_number
from unimask.registry import get_modality, tasks

from .format import DataError

MAX_WORKERS = 256  # DataLoader worker processes per rank
MAX_SHUFFLE_BUFFER = 1_000_000  # samples held per stream's buffer: it fills before the first sample comes out
MAX_BATCH = 65536  # sequences per batch on one rank
MAX_SEED = 2**32 - 1  # seeds feed numpy's SeedSequence


@dataclass
class StreamConfig:
    dataset: str  # dataset folder with dataset.json, or a shard list/pattern ("dir/*.tar", "a-{000..009}.tar")
    task: str  # registered task template built from each sample: t2i, i2t, vla, lm, ...
    weight: float = 1.0  # relative share of this stream in the mix
    split: str = "train"  # which split of a dataset folder to read (ignored for shard patterns)
    # Which paraphrase of a sample's text: "random" each time, "first" (canonical) always, "stored" txt; "auto"
    # follows `DataConfig.random_paraphrase`. A text *target* (captions) learns its condition several times faster
    # from one canonical wording: random paraphrases spread the evidence over every wording and word position.
    text: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise DataError(f"`dataset` of a stream must name a dataset folder or shard pattern, got {self.dataset!r}.",
                            key="dataset")
        check_choice("task", self.task, tuple(tasks()), fix="register a new one with unimask.registry.register_task",
                     error=DataError)
        check_choice("text", self.text, ("auto", *get_modality("text").choices), error=DataError)
        check_number("weight", self.weight, 0, open_low=True, fix="weights are relative shares of the mix",
                     error=DataError)


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
    image_batch: int = 32  # samples per tokenizer call when values are tokenized on the fly (VQ encoder batches)
    seed: int = 0  # base seed of shard order, shuffle buffers and mixing (rank/worker/epoch derive from it)
    drop_last: bool = True  # drop a final partial batch (only happens in non-resampled mode)
    pad_multiple: int = 1  # pad each batch's length up to a multiple of this (few distinct shapes for compiled models)

    def __post_init__(self) -> None:
        check_integer_fields(self, (("batch_size", 1, MAX_BATCH, "it is per rank"),
                                    ("num_workers", 0, MAX_WORKERS, "0 reads in the training process"),
                                    ("shuffle_buffer", 0, MAX_SHUFFLE_BUFFER, "0 or 1 turns shuffling off"),
                                    ("image_batch", 1, 4096, ""), ("seed", 0, MAX_SEED, ""),
                                    ("pad_multiple", 1, 4096, "1 pads to the longest row only")), error=DataError)
        check_choice("split_by", self.split_by, ("auto", "shard", "sample"), error=DataError)
        self.streams = [s if isinstance(s, StreamConfig) else StreamConfig(**s) for s in self.streams]

