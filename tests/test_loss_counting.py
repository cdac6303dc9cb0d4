"""Every sample lost while training is counted, per visit of its shard, when the visit ends: corrupted samples, a
shard truncated mid-sample, a shard that ends early without an error, and a shard that fails at open.

The count is checked independently of the loader: the test wraps webdataset's `gopen` to see which shard each visit
opens and reads the loader's counters at that moment. With no shuffle buffer every earlier visit has been read and
decoded by then, so the counters must equal the sum of the known losses of the visits opened before, exactly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("webdataset")

from trainer_fixtures import make_setup, write_config  # noqa: E402
from unimask.config import load_config  # noqa: E402
from unimask.training.train_config import TrainConfig  # noqa: E402
from unimask.training.trainer import Trainer  # noqa: E402


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers()]


def rewrite(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def data_end(path: Path, name: str) -> int:
    """Byte offset where member `name`'s data ends, padded to the tar block (the next header starts there)."""
    with tarfile.open(path) as tar:
        info = tar.getmember(name)
    return info.offset_data + -(-info.size // 512) * 512


def damage(dataset: Path) -> tuple[dict[str, int], set[str]]:
    """Damage four train shards; returns the samples each visit of every shard loses, and the shards whose reads
    fail (all computed from the damage done, not from the loader)."""
    card = json.loads((dataset / "dataset.json").read_text())
    counts = {str(dataset / rel): n for rel, n in card["splits"]["train"]["shard_counts"].items()}
    corrupted, cut, ends_early, missing = sorted(counts)[:4]
    entries = members(Path(corrupted))
    pngs = [i for i, (info, _) in enumerate(entries) if info.name.endswith(".png")]
    for i in pngs[3:6]:
        entries[i] = (entries[i][0], b"\x89PNG this picture is damaged")
    rewrite(Path(corrupted), entries)
    # Cut inside the picture of sample 10: samples 0-9 are whole, sample 10 keeps only its json.
    keys = sorted({info.name.split(".")[0] for info, _ in members(Path(cut))})
    middle = data_end(Path(cut), f"{keys[10]}.png") - 300
    Path(cut).write_bytes(Path(cut).read_bytes()[:middle])
    # Cut exactly after sample 14 (a tar that simply ends: no error, 15 samples).
    keys = sorted({info.name.split(".")[0] for info, _ in members(Path(ends_early))})
    Path(ends_early).write_bytes(Path(ends_early).read_bytes()[:data_end(Path(ends_early), f"{keys[14]}.txt")])
    Path(missing).unlink()
    lost = {url: 0 for url in counts}
    lost.update({corrupted: 3, cut: counts[cut] - 10, ends_early: counts[ends_early] - 15, missing: counts[missing]})
    return lost, {cut, ends_early, missing}


def test_training_counts_every_lost_sample_per_visit(tmp_path, monkeypatch):
    from webdataset import tariterators

    root = make_setup(tmp_path / "setup")["root"]
    from unimask.training.data.writers.digits import write_digits

    write_digits(tmp_path / "damaged", image_size=32, limit=300, shard_size=40)
    lost, failing = damage(tmp_path / "damaged")
    streams = json.dumps([{"dataset": str(tmp_path / "damaged"), "task": "i2t"}])
    config = load_config(write_config(root, tmp_path / "run", steps=24, log_every=4, checkpoint_every=100), TrainConfig,
                         [f"data.streams={streams}", "data.shuffle_buffer=0", "data.batch_size=16"])
    trainer = Trainer(config)
    counter = trainer.loader.dataset.counter
    visits: list[tuple[str, dict[str, int]]] = []
    opener = tariterators.gopen  # the module webdataset's url_opener calls `gopen` from
    real_gopen = opener.gopen

    def gopen(url, *args, **kwargs):
        visits.append((str(url), counter.counts()))
        return real_gopen(url, *args, **kwargs)

    monkeypatch.setattr(opener, "gopen", gopen)
    trainer.train()

    opened = [url for url, _ in visits]
    assert set(lost) <= set(opened), f"every damaged shard must be visited; visits: {opened}"
    assert sum(url in failing for url in opened) >= 4
    for index, (url, counts) in enumerate(visits):
        before = opened[:index]
        samples = sum(value for key, value in counts.items() if key != "shards")
        assert samples == sum(lost[u] for u in before), f"visit {index} ({url}): counted {counts}"
        assert counts["shards"] == sum(u in failing for u in before), f"visit {index} ({url}): counted {counts}"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = {key.removeprefix("skipped/"): value for key, value in rows[-1].items() if key.startswith("skipped/")}
    assert rows[-1]["step"] == 24 and final == {**counter.counts(), "nonfinite_steps": 0}
    assert counter.counts()["undecodable"] > 0 and counter.counts()["tar_error"] > 0
