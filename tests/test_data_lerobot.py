"""`unimask data lerobot`: tiny LeRobotDatasets (v3.0 and v2.1 layouts, see lerobot_fixture) -> per-step VLA shards.

The shards are read back with webdataset directly (not through the loader's decoded dict, whose keys may change),
and every sample is checked against the fixture's columns: the frame (its grey level encodes the global frame
index), the task string, the action chunk with last-action padding, the state; plus the split and the card.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("webdataset")
pytest.importorskip("pyarrow")
pytest.importorskip("av")

import lerobot_fixture as fx  # noqa: E402

from unimask.training.data.format import DataError, read_card  # noqa: E402

LENGTHS_V30, LENGTHS_V21 = (5, 4, 6), (4, 3, 5)


def read_split(directory: Path, split: str) -> list[dict]:
    """Every sample of a split, decoded here with webdataset, PIL and numpy (independent of the loader)."""
    import webdataset as wds
    from PIL import Image

    def npy(data: bytes) -> np.ndarray:
        return np.load(io.BytesIO(data), allow_pickle=False)

    samples, shards = [], [str(directory / rel) for rel in read_card(directory)["splits"][split]["shards"]]
    for raw in wds.WebDataset(shards, shardshuffle=False, empty_check=False) if shards else []:
        with Image.open(io.BytesIO(raw["png"])) as image:
            pixels = np.asarray(image.convert("RGB"))
        sample = {"key": raw["__key__"], "meta": json.loads(raw["json"]), "image": pixels,
                  "text": raw["txt"].decode("utf-8"), "actions": npy(raw["actions.npy"])}
        if "state.npy" in raw:
            sample["state"] = npy(raw["state.npy"])
        samples.append(sample)
    return samples


def check_samples(samples: list[dict], columns: dict, lengths, horizon: int, image_check) -> None:
    """Each sample equals the fixture frame it claims to be (episode, step) in text, actions, state and image."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for sample in samples:
        episode, step = sample["meta"]["episode"], sample["meta"]["step"]
        start, length = int(starts[episode]), lengths[episode]
        frame = start + step  # global frame index in the fixture
        assert sample["meta"]["episode_length"] == length and sample["meta"]["tasks"] == ["vla"]
        assert sample["text"] == fx.TASKS[columns["task_index"][frame]]
        assert sample["meta"]["instructions"] == [sample["text"]]
        valid = min(horizon, length - step)
        expected = columns["action"][frame:frame + valid]
        expected = np.concatenate([expected, np.repeat(expected[-1:], horizon - valid, axis=0)])
        assert sample["meta"]["valid_steps"] == valid
        np.testing.assert_array_equal(sample["actions"], expected)
        assert sample["actions"].dtype == np.float32 and sample["actions"].shape == (horizon, 4)
        if "state" in sample:
            np.testing.assert_array_equal(sample["state"], columns["observation.state"][frame])
        image_check(sample["image"], frame)


def check_top_frame(image: np.ndarray, frame: int, side: int = 32) -> None:
    # The whole image is the frame's grey level: the black margins were cropped away, and h264 at qp 0 keeps
    # grey levels within +-1 (neighbouring frames are 16 levels apart).
    assert image.shape == (side, side, 3)
    assert np.abs(image.astype(int) - fx.frame_level(frame)).max() <= 2, (frame, image.min(), image.max())


def episodes_of(samples: list[dict]) -> dict[int, list[int]]:
    steps: dict[int, list[int]] = {}
    for sample in samples:
        steps.setdefault(sample["meta"]["episode"], []).append(sample["meta"]["step"])
    return {e: sorted(s) for e, s in steps.items()}


@pytest.fixture(scope="module")
def v30(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lerobot") / "v30"
    return root, fx.write_v30(root, LENGTHS_V30)


def test_fixture_follows_lerobot_v30_invariants(v30):
    fx.check_layout(v30[0])


def test_v30_video_round_trip_split_by_episode_and_card(v30, tmp_path):
    from unimask.training.data.writers.lerobot import write_lerobot

    root, columns = v30
    out = tmp_path / "out"
    card = write_lerobot(out, root, horizon=4, test_fraction=0.3, image_size=32, shard_size=5, command="cmd")
    train, test = read_split(out, "train"), read_split(out, "test")
    train_eps, test_eps = episodes_of(train), episodes_of(test)
    assert len(test_eps) == 1 and len(train_eps) == 2 and not set(train_eps) & set(test_eps)
    for episodes in (train_eps, test_eps):  # every episode complete, in one split only
        assert all(steps == list(range(LENGTHS_V30[e])) for e, steps in episodes.items())
    assert card["splits"]["train"]["count"] == len(train) == sum(LENGTHS_V30[e] for e in train_eps)
    assert card["splits"]["test"]["count"] == len(test) == sum(LENGTHS_V30[e] for e in test_eps)
    assert len(card["splits"]["train"]["shards"]) == 2  # shard_size 5 cuts the train split
    check_samples(train + test, columns, LENGTHS_V30, 4, check_top_frame)
    last = [s["text"] for s in train + test if s["meta"]["episode"] == 2]
    assert set(last) == set(fx.TASKS), "the last episode switches task: each frame keeps its own instruction"
    assert read_card(out) == card
    expected = {"source": "lerobot", "source_path": str(root.resolve()), "codebase_version": "v3.0", "fps": 10,
                "image_size": [32, 32], "tasks": ["vla"], "horizon": 4, "action_dim": 4, "state_dim": 4,
                "camera": fx.TOP, "action_key": "action", "state_key": "observation.state", "command": "cmd",
                "instructions": sorted(fx.TASKS), "test_fraction": 0.3}
    assert {k: card[k] for k in expected} == expected
    assert card["stats"]["skipped_episodes"] == 0 and card["stats"]["episodes"] == {"train": 2, "test": 1}


def test_the_loader_reads_every_converted_sample(v30, tmp_path):
    from unimask.training.data.loader import iterate_samples
    from unimask.training.data.writers.lerobot import write_lerobot

    card = write_lerobot(tmp_path / "out", v30[0], horizon=4, test_fraction=0.3, image_size=32)
    for split in ("train", "test"):
        assert len(list(iterate_samples(tmp_path / "out", split=split, task="vla"))) == card["splits"][split]["count"]


def test_v30_image_feature_camera_without_state_and_an_episode_limit(v30, tmp_path):
    from unimask.training.data.writers.lerobot import write_lerobot

    root, columns = v30
    card = write_lerobot(tmp_path / "out", root, camera=fx.WRIST, state_key="none", image_size=0, horizon=3,
                         test_fraction=0.5, max_episodes=2)
    samples = read_split(tmp_path / "out", "train") + read_split(tmp_path / "out", "test")
    assert sorted(episodes_of(samples)) == [0, 1] and len(samples) == sum(LENGTHS_V30[:2])
    assert not any("state" in s for s in samples) and card["state_dim"] is None and card["state_key"] is None

    def exact_png(image, frame):  # PNG in the parquet is lossless; image_size 0 keeps the 48x48 frame
        np.testing.assert_array_equal(image, fx.wrist_image(frame))

    check_samples(samples, columns, LENGTHS_V30, 3, exact_png)
    assert card["image_size"] == [48, 48] and card["camera"] == fx.WRIST


def test_second_video_file_and_a_corrupt_video_is_counted_and_skipped(tmp_path, capsys):
    from unimask.cli import main

    root = tmp_path / "ds"
    columns = fx.write_v30(root, LENGTHS_V30, video_files=(0, 0, 1))  # episode 2 starts file-001 at time 0
    fx.check_layout(root)
    args = ["data", "lerobot", "--root", str(root), "--horizon", "4", "--image-size", "32", "--test-fraction", "0.3"]
    assert main(args + ["--out", str(tmp_path / "clean")]) == 0
    clean = read_split(tmp_path / "clean", "train") + read_split(tmp_path / "clean", "test")
    assert len(clean) == sum(LENGTHS_V30)
    check_samples(clean, columns, LENGTHS_V30, 4, check_top_frame)

    video = root / fx.V3_VIDEO.format(video_key=fx.TOP, chunk_index=0, file_index=1)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # not a decodable mp4
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "skipped")]) == 0
    assert "episodes skipped (undecodable observation.images.top): 1" in capsys.readouterr().out
    card = read_card(tmp_path / "skipped")
    assert card["stats"]["skipped_episodes"] == 1 and card["stats"]["skipped"][0]["episode"] == 2
    assert card["command"].startswith("unimask data lerobot") and f"--root {root}" in card["command"]
    samples = read_split(tmp_path / "skipped", "train") + read_split(tmp_path / "skipped", "test")
    assert sorted(episodes_of(samples)) == [0, 1]
    check_samples(samples, columns, LENGTHS_V30, 4, check_top_frame)


def test_v21_round_trip(tmp_path):
    from unimask.training.data.writers.lerobot import write_lerobot

    root = tmp_path / "v21"
    columns = fx.write_v21(root, LENGTHS_V21)
    card = write_lerobot(tmp_path / "out", root, horizon=4, test_fraction=0.3, image_size=32)
    train, test = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "test")
    assert not set(episodes_of(train)) & set(episodes_of(test)) and len(train + test) == sum(LENGTHS_V21)
    check_samples(train + test, columns, LENGTHS_V21, 4, check_top_frame)
    assert card["codebase_version"] == "v2.1" and card["fps"] == 10 and card["camera"] == fx.TOP


# ----- bad input ------------------------------------------------------------------------------------------------
def _edit_info(root: Path, edit) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def test_bad_input_names_the_key_and_the_fix(v30, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from unimask.training.data.writers.lerobot import write_lerobot

    root = tmp_path / "copy"
    shutil.copytree(v30[0], root)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"no meta/info.json; --root must be a LeRobotDataset folder"):
        write_lerobot(out, tmp_path)
    with pytest.raises(DataError, match=r"available cameras: \['observation.images.top', 'observation.images.wrist'"):
        write_lerobot(out, root, camera="observation.images.side")
    with pytest.raises(DataError, match=r"--state-key 'observation.joints' is not .*'observation.state'"):
        write_lerobot(out, root, state_key="observation.joints")
    with pytest.raises(DataError, match=r"--action-key 'action.ee' is not .*'action'"):
        write_lerobot(out, root, action_key="action.ee")
    episodes_file = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes = pq.read_table(episodes_file)
    lengths = episodes["length"].to_numpy()
    pq.write_table(episodes.set_column(episodes.schema.get_field_index("length"), "length",
                                       pa.array(lengths + (np.arange(len(lengths)) == 1), pa.int64())),
                   episodes_file)  # episode 1 claims one frame more than the data holds
    with pytest.raises(DataError, match=r"episode 1: the episodes metadata says 5 frames but file-000.parquet holds 4"):
        write_lerobot(out, root, test_fraction=0.5)
    pq.write_table(episodes, episodes_file)
    _edit_info(root, lambda info: info.update(codebase_version="v1.6"))
    with pytest.raises(DataError, match=r"codebase_version 'v1.6' is not supported; supported: v3.0, v2.1"):
        write_lerobot(out, root)
    # No observation.state feature: the default is no state, not an error.
    _edit_info(root, lambda info: (info.update(codebase_version="v3.0"), info["features"].pop("observation.state")))
    assert write_lerobot(out, root, image_size=16)["state_dim"] is None


def test_video_shorter_than_the_parquet_names_episode_and_camera(tmp_path):
    from unimask.training.data.writers.lerobot import write_lerobot

    root = tmp_path / "short"
    fx.write_v30(root, (3, 4), missing_video_frames=2, wrist=False)
    with pytest.raises(DataError, match=r"episode 1: the data parquet has 4 frames but video "
                                        r"'observation.images.top' .* has only 2 of them"):
        write_lerobot(tmp_path / "out", root, test_fraction=0.5)
