"""Streaming loader: rank x worker splitting, seeded resampling, mixing ratios, corrupt data, pre-tokenized codes."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("webdataset")

from unimask.processor import Processor, SequenceSettings  # noqa: E402
from unimask.tokenizers.text import TextModality, train_text_tokenizer  # noqa: E402
from unimask.training.data.format import (CARD_FILE, DataError, DatasetWriter, encode_npy, make_sample,  # noqa: E402
                                          resolve_shards)
from unimask.training.data.config import DataConfig, StreamConfig  # noqa: E402
from unimask.training.data.loader import MixedDataset, SampleStream, make_loader, resolve_rank_world  # noqa: E402
from unimask.vocab import VocabError  # noqa: E402

H, D = 4, 2
WORDS = [f"{word} {i}" for word in ("item", "thing") for i in range(500)]
TEXT = train_text_tokenizer(WORDS, vocab_size=300)


class PoolImages:
    """Test image tokenizer: 16x16 RGB -> 16 codes (mean intensity of each 4x4 patch in 16 levels)."""

    vocab_size = 16
    num_tokens = 16

    def encode(self, images):
        x = np.asarray(images, dtype=np.float64).reshape(len(images), 4, 4, 4, 4, 3).mean(axis=(2, 4, 5))
        return torch.as_tensor(np.minimum(x / 16, 15).astype(np.int64))


class BinActions:
    """Test action tokenizer: 12 uniform bins on [-1, 1] per value (a chunk [H, D] -> H * D codes)."""

    vocab_size = 12
    action_dim = D

    def tokens_per_chunk(self, horizon, length=None):
        return horizon * D

    def encode_chunks(self, chunks, length=None):
        codes = np.clip(((np.asarray(chunks) + 1) / 2 * 12).astype(np.int64), 0, 11)
        return codes.reshape(len(codes), -1)


def text_ids(text: str) -> list[int]:
    return TextModality().encode(TEXT, [text])[0].tolist()


def processor(tokenizers=None, caption_length: int = 24) -> Processor:
    tokenizers = tokenizers or {"image": PoolImages(), "action": BinActions()}
    return Processor({"text": TEXT, **tokenizers}, SequenceSettings(caption_length=caption_length, action_horizon=H,
                                                                    action_dim=D))


VOCAB = processor().vocab


def write_dataset(out: Path, n: int, shard_size: int, *, tasks=("t2i", "i2t", "vla"), codes: bool = False,
                  corrupt: dict[str, int] | None = None, seed: int = 0, stored_text: str = "item") -> dict:
    """n good samples (+ corrupt ones of the given kinds) in the train split; image 16x16, actions [4, 2]."""
    rng = np.random.default_rng(seed)
    kinds = [k for k, m in (corrupt or {}).items() for _ in range(m)]
    order = rng.permutation(n + len(kinds))
    with DatasetWriter(out, "syn", maxcount=shard_size) as writer:
        for i in order:
            image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            actions = rng.uniform(-1, 1, (H, D)).astype(np.float32)
            extra = {}
            if codes:
                extra = {"img_codes": PoolImages().encode(image[None])[0].numpy().astype(np.int16).ravel(),
                         "act_codes": BinActions().encode_chunks(actions[None])[0].astype(np.int16)}
            meta = {"captions": [f"item {i}", f"thing {i}"], "valid_steps": H, "index": int(i)}
            sample = make_sample(f"s{i:05d}", image=image, text=f"{stored_text} {i}", actions=actions, meta=meta, **extra)
            if i >= n:
                kind = kinds[i - n]
                if kind == "undecodable_png":
                    sample["png"] = b"\x89PNG but not really" + bytes(rng.integers(0, 256, 40, dtype=np.uint8))
                elif kind == "missing_txt":
                    del sample["txt"]
                elif kind == "bad_actions":
                    sample["actions.npy"] = encode_npy(np.zeros((H, D + 3), np.float32))
                elif kind == "bad_json":
                    sample["json"] = b"{not json"
                elif kind == "nan_actions":
                    sample["actions.npy"] = encode_npy(np.full((H, D), np.nan, np.float32))
                else:
                    raise ValueError(kind)
            writer.write("train", sample)
        return writer.finish({"source": "synthetic", "tasks": list(tasks), "image_size": [16, 16],
                              "action_dim": D, "horizon": H, "state_dim": None})


def keys_of(dataset, num_workers: int) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [sample["key"] for sample in loader]


# ----- splitting ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shards,per_shard", [(12, 10), (3, 40)], ids=["split-by-shard", "fewer-shards-than-consumers"])
def test_two_ranks_two_workers_read_every_sample_exactly_once(tmp_path, shards, per_shard):
    write_dataset(tmp_path / "d", shards * per_shard, per_shard)
    urls, card = resolve_shards(tmp_path / "d")
    assert len(urls) == shards
    per_rank = []
    for rank in range(2):
        stream = SampleStream(urls, "i2t", resampled=False, shuffle_buffer=16, rank=rank, world_size=2, seed=5)
        per_rank.append(keys_of(stream, num_workers=2))
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == len(set(everything)), "a sample was read by two consumers"
    assert set(everything) == {f"s{i:05d}" for i in range(shards * per_shard)}, "a sample was never read"
    assert min(len(k) for k in per_rank) >= shards * per_shard // 4  # both ranks did real work


def test_mixed_loader_two_ranks_two_workers_covers_the_test_split_once(tmp_path):
    write_dataset(tmp_path / "d", 90, 10)
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "i2t")], batch_size=7, num_workers=2, resampled=False,
                        drop_last=False, random_paraphrase=False)
    captions = []
    for rank in range(2):
        for batch in make_loader(config, processor(), rank=rank, world_size=2):
            for row in range(len(batch)):
                ids = batch.input_ids[row][batch.target_mask[row]]
                captions.append(tuple(ids[ids < VOCAB.text_size].tolist()))
    assert len(captions) == 90 and len(set(captions)) == 90


def test_resampled_order_is_seeded_and_differs_between_ranks(tmp_path):
    write_dataset(tmp_path / "d", 80, 10)
    urls, _ = resolve_shards(tmp_path / "d")

    def first(rank, seed, n=60):
        stream = SampleStream(urls, "t2i", resampled=True, shuffle_buffer=20, rank=rank, world_size=2, seed=seed)
        out = []
        for sample in stream:
            out.append(sample["key"])
            if len(out) == n:
                return out

    assert first(0, 1) == first(0, 1)
    assert first(0, 1) != first(1, 1)
    assert first(0, 1) != first(0, 2)


def test_epochs_reshuffle_without_losing_samples(tmp_path):
    write_dataset(tmp_path / "d", 60, 6)
    urls, _ = resolve_shards(tmp_path / "d")
    stream = SampleStream(urls, "t2i", resampled=False, shuffle_buffer=10, seed=3)
    epoch0 = [s["key"] for s in stream]
    stream.set_epoch(1)
    epoch1 = [s["key"] for s in stream]
    assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1) and len(epoch0) == 60


def test_rank_and_world_come_from_torch_distributed_when_initialised(tmp_path):
    import torch.distributed as dist

    assert resolve_rank_world(1, 2) == (1, 2)
    with pytest.raises(DataError, match="rank"):
        resolve_rank_world(2, 2)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert resolve_rank_world(1, 2) == (0, 1)
    finally:
        dist.destroy_process_group()


# ----- mixing -------------------------------------------------------------------------------------------------------
def test_task_mixing_ratios_hold_within_tolerance(tmp_path):
    """Over N = 3000 sequences each task's share is within 0.04 of its weight share (>= 4.4 binomial sigmas)."""
    write_dataset(tmp_path / "d", 200, 25, codes=True)
    streams = [StreamConfig(str(tmp_path / "d"), "t2i", 1.0), StreamConfig(str(tmp_path / "d"), "i2t", 3.0),
               StreamConfig(str(tmp_path / "d"), "vla", 2.0)]
    config = DataConfig(streams, batch_size=50, shuffle_buffer=50, seed=11)
    counts: collections.Counter = collections.Counter()
    for i, batch in enumerate(make_loader(config, processor())):
        counts.update(batch.tasks)
        if i == 59:
            break
    n = sum(counts.values())
    assert n == 3000
    for task, share in (("t2i", 1 / 6), ("i2t", 3 / 6), ("vla", 2 / 6)):
        assert abs(counts[task] / n - share) < 0.04, (task, counts[task] / n, share)


def test_stream_config_validation():
    with pytest.raises(DataError, match="task"):
        StreamConfig("x", "caption")
    with pytest.raises(DataError, match="weight"):
        StreamConfig("x", "t2i", weight=0)
    with pytest.raises(DataError, match="split_by"):
        DataConfig([], split_by="rows")
    from unimask.config import ConfigError, from_dict

    config = from_dict(DataConfig, {"streams": [{"dataset": "d", "task": "vla", "weight": 2}], "batch_size": 4})
    assert config.streams == [StreamConfig("d", "vla", 2.0)]
    with pytest.raises(ConfigError, match=r"streams\[0\].wieght"):
        from_dict(DataConfig, {"streams": [{"dataset": "d", "task": "vla", "wieght": 2}]})


# ----- corrupt data -------------------------------------------------------------------------------------------------
def test_hundred_corrupt_samples_are_skipped_and_counted(tmp_path):
    corrupt = {"undecodable_png": 25, "missing_txt": 25, "bad_actions": 20, "nan_actions": 5, "bad_json": 25}
    write_dataset(tmp_path / "d", 400, 50, corrupt=corrupt)
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "vla")], batch_size=10, num_workers=2, resampled=False,
                        drop_last=False)
    loader = make_loader(config, processor())
    sequences = sum(len(batch) for batch in loader)
    assert sequences == 400
    assert loader.dataset.skipped() == {"tar_error": 0, "missing_key": 25, "undecodable": 50, "bad_shape": 25,
                                        "too_long": 0, "shards": 0}


def test_skips_are_logged_with_key_and_shard(tmp_path, caplog):
    write_dataset(tmp_path / "d", 20, 10, corrupt={"missing_txt": 1})
    urls, _ = resolve_shards(tmp_path / "d")
    with caplog.at_level(logging.WARNING, logger="unimask.training.data.format"):
        assert len(list(SampleStream(urls, "i2t", resampled=False, shuffle_buffer=0))) == 20
    (record,) = [r for r in caplog.records if "skipped sample" in r.getMessage()]
    assert "s00020" in record.getMessage() and "syn-00000" in record.getMessage()
    assert "missing_key" in record.getMessage()


def test_truncated_shard_is_skipped_and_training_goes_on(tmp_path):
    write_dataset(tmp_path / "d", 100, 20)
    urls, _ = resolve_shards(tmp_path / "d")
    broken = Path(urls[1])
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # cut mid-sample
    Path(urls[3]).write_bytes(b"this is not a tar file" * 50)
    stream = SampleStream(urls, "t2i", resampled=False, shuffle_buffer=0, card=resolve_shards(tmp_path / "d")[1])
    keys = [s["key"] for s in stream]
    counts = stream.counter.counts()
    # Samples, not events: every sample the two broken shards did not give is counted once, and so is each shard.
    assert counts["shards"] == 2 and counts["tar_error"] == 100 - len(keys)
    assert 60 <= len(keys) < 100 and len(keys) == len(set(keys))
    # Resampled training over the same shards keeps producing batches.
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "t2i")], batch_size=8, shuffle_buffer=8)
    loader = make_loader(config, processor())
    for i, batch in enumerate(loader):
        if i == 40:
            break
    assert len(batch) == 8 and loader.dataset.skipped()["tar_error"] >= 2


def test_a_stream_with_no_usable_sample_raises_instead_of_spinning(tmp_path):
    write_dataset(tmp_path / "d", 0, 10, corrupt={"missing_txt": 30})
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "t2i")], batch_size=4)
    with pytest.raises(DataError, match="no sample is usable"):
        next(iter(make_loader(config, processor())))


def test_caption_too_long_for_the_template_is_skipped_not_fatal(tmp_path):
    write_dataset(tmp_path / "d", 30, 10)
    short = processor(caption_length=len(text_ids("item 9")) + 1)  # "item 9" and <eos>
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "i2t")], batch_size=1, resampled=False,
                        random_paraphrase=False)
    loader = make_loader(config, short)
    fit = sum(len(text_ids(f"item {i}")) <= len(text_ids("item 9")) for i in range(30))
    assert 0 < fit < 30 and sum(len(b) for b in loader) == fit
    assert loader.dataset.skipped()["too_long"] == 30 - fit


# ----- tokenization -------------------------------------------------------------------------------------------------
def test_sequences_hold_the_tokenized_sample(tmp_path):
    write_dataset(tmp_path / "d", 10, 10)
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "vla")], batch_size=10, resampled=False,
                        shuffle_buffer=0, random_paraphrase=False)
    samples = {s["meta"]["index"]: s for s in SampleStream(resolve_shards(tmp_path / "d")[0], "vla",
                                                              resampled=False, shuffle_buffer=0)}
    (batch,) = list(make_loader(config, processor()))
    for row in range(10):
        seq = batch.input_ids[row]
        text = seq[(seq < VOCAB.text_size) & (batch.segment_ids[row] == 1)].tolist()
        match = [i for i, s in samples.items() if text_ids(s["text"].stored) == text]
        assert len(match) == 1
        sample = samples[match[0]]
        image_ids = VOCAB.to_id("image", PoolImages().encode(sample["image"][None])[0].flatten())
        action_ids = VOCAB.to_id("action", BinActions().encode_chunks(sample["action"][None]).flatten())
        lo, hi = VOCAB.range_of("image")
        assert torch.equal(seq[(seq >= lo) & (seq < hi)], image_ids)
        lo, hi = VOCAB.range_of("action")
        assert torch.equal(seq[(seq >= lo) & (seq < hi)], action_ids)


def test_random_paraphrase_draws_from_the_json_captions(tmp_path):
    write_dataset(tmp_path / "d", 20, 10)
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "lm")], batch_size=20, resampled=False, shuffle_buffer=0)
    (batch,) = list(make_loader(config, processor()))
    words = collections.Counter()
    for row in range(20):
        ids = batch.input_ids[row][batch.target_mask[row]]
        words[int(ids[0])] += 1
    # Both paraphrases ("item i", "thing i") appear.
    assert set(words) == {text_ids("item")[0], text_ids("thing")[0]} and min(words.values()) >= 3


def test_stream_text_first_gives_one_canonical_wording(tmp_path):
    write_dataset(tmp_path / "d", 20, 10, stored_text="thing")

    def first_tokens(text: str) -> set:
        config = DataConfig([StreamConfig(str(tmp_path / "d"), "lm", text=text)], batch_size=20, resampled=False,
                            shuffle_buffer=0)
        (batch,) = list(make_loader(config, processor()))
        return {int(batch.input_ids[row][batch.target_mask[row]][0]) for row in range(20)}

    assert first_tokens("first") == {text_ids("item")[0]}
    assert first_tokens("stored") == {text_ids("thing")[0]}
    with pytest.raises(DataError, match="`text` must be one of"):
        StreamConfig(str(tmp_path / "d"), "lm", text="canonical")


def test_pretokenize_gives_the_same_sequences_without_tokenizers(tmp_path, capsys):
    from unimask.training.data.pretokenize import pretokenize_shards

    write_dataset(tmp_path / "raw", 40, 10)
    card = pretokenize_shards(tmp_path / "raw", tmp_path / "tok", {"image": PoolImages(), "action": BinActions()},
                              batch_size=16)
    assert card["splits"]["train"]["count"] == 40
    assert card["pretokenized"]["vocab_sizes"] == {"image": 16, "action": 12}

    def sequences(path, tokenizers):
        config = DataConfig([StreamConfig(str(path), "vla")], batch_size=40, resampled=False, shuffle_buffer=0,
                            random_paraphrase=False)
        (batch,) = list(make_loader(config, processor(tokenizers)))
        return batch.input_ids

    class Refuses(PoolImages):
        def encode(self, images):
            raise AssertionError("pre-tokenized shards must not be tokenized again")

    assert torch.equal(sequences(tmp_path / "raw", None),
                       sequences(tmp_path / "tok", {"image": Refuses(), "action": BinActions()}))

    class Bigger(PoolImages):
        vocab_size = 32

    with pytest.raises(DataError, match="pre-tokenized with 16 image codes but the vocabulary has 32"):
        MixedDataset(DataConfig([StreamConfig(str(tmp_path / "tok"), "vla")]),
                     processor({"image": Bigger(), "action": BinActions()}))


def test_a_task_needing_a_modality_the_model_lacks_names_it(tmp_path):
    write_dataset(tmp_path / "d", 10, 10)
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "t2i")], batch_size=2)
    with pytest.raises(VocabError, match=r"task 't2i' needs \['image'\] ids"):
        make_loader(config, processor({"action": BinActions()}))


def test_inspect_prints_counts_and_writes_a_grid(tmp_path, capsys):
    from PIL import Image

    from unimask.training.data.inspect import inspect_dataset

    write_dataset(tmp_path / "d", 30, 10)
    result = inspect_dataset(tmp_path / "d", samples=6)
    out = capsys.readouterr().out
    assert "train: 30 samples in 3 shards" in out and "read back 30 of 30 train samples" in out
    grid = np.asarray(Image.open(result["png"]))
    assert grid.shape[0] > 128 and grid.std() > 10  # images, text and action plots, not a blank page


def test_an_image_the_tokenizer_rejects_is_skipped(tmp_path):
    class Picky(PoolImages):
        def encode(self, images):
            if any(int(np.asarray(im)[0, 0, 0]) % 7 == 0 for im in images):
                raise ValueError("this tokenizer dislikes multiples of seven")
            return super().encode(images)

    write_dataset(tmp_path / "d", 40, 10)
    urls, _ = resolve_shards(tmp_path / "d")
    bad = sum(int(s["image"][0, 0, 0]) % 7 == 0 for s in SampleStream(urls, "t2i", resampled=False, shuffle_buffer=0))
    assert bad > 0
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "t2i")], batch_size=1, resampled=False, image_batch=8)
    loader = make_loader(config, processor({"image": Picky(), "action": BinActions()}))
    assert sum(len(b) for b in loader) == 40 - bad
    assert loader.dataset.skipped()["bad_shape"] == bad


@pytest.mark.parametrize("field, value, match", [("action_dim", D + 4, "fit-actions"),
                                                  ("horizon", H + 1, "sequence.action_horizon")])
def test_a_dataset_whose_actions_the_model_cannot_code_is_refused_at_the_start(tmp_path, field, value, match):
    write_dataset(tmp_path / "d", 4, 4)
    card = json.loads((tmp_path / "d" / CARD_FILE).read_text())
    (tmp_path / "d" / CARD_FILE).write_text(json.dumps({**card, field: value}))
    config = DataConfig([StreamConfig(str(tmp_path / "d"), "vla")], batch_size=2, num_workers=0)
    with pytest.raises(DataError, match=match):
        make_loader(config, processor())
    make_loader(DataConfig([StreamConfig(str(tmp_path / "d"), "i2t")], batch_size=2, num_workers=0), processor())
