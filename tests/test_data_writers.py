"""Dataset writers: exact read-back, disjoint splits (by key and by content hash), cards, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("webdataset")

from shard_reading import read_split  # noqa: E402
from unimask.training.data.format import CARD_FILE, DataError, content_hash, read_card  # noqa: E402


def assert_disjoint(train: list[dict], test: list[dict]) -> None:
    train_keys, test_keys = {s["key"] for s in train}, {s["key"] for s in test}
    assert len(train_keys) == len(train) and len(test_keys) == len(test), "duplicate keys inside a split"
    assert not train_keys & test_keys
    train_hashes = {content_hash(s["image"]) for s in train}
    test_hashes = {content_hash(s["image"]) for s in test}
    assert not train_hashes & test_hashes, "identical images in train and test"


def assert_card_matches(directory: Path, card: dict, train: list[dict], test: list[dict]) -> None:
    assert read_card(directory) == card
    assert card["splits"]["train"]["count"] == len(train) and card["splits"]["test"]["count"] == len(test)
    assert card["bytes"] == sum(p.stat().st_size for p in directory.rglob("*.tar"))
    assert not list(directory.rglob("*.partial")), "a .partial shard was left behind"


# ----- digits -----------------------------------------------------------------------------------------------------
def test_digits_read_back_exactly_and_split_is_stratified_and_disjoint(tmp_path):
    from sklearn.datasets import load_digits

    from unimask.training.data.writers.digits import digit_captions, upscale_digit, write_digits

    out = tmp_path / "digits"
    card = write_digits(out, limit=300, shard_size=64, seed=3)
    train, test = read_split(out, "train"), read_split(out, "test")
    assert_card_matches(out, card, train, test)
    assert len(train) + len(test) == 300
    assert_disjoint(train, test)
    source = load_digits()
    for sample in train + test:
        index, label = sample["meta"]["index"], sample["meta"]["label"]
        assert label == source.target[index]
        np.testing.assert_array_equal(sample["image"], upscale_digit(source.images[index], 64, "bilinear"))
        assert sample["image"].shape == (64, 64, 3) and sample["image"].dtype == np.uint8
        assert sample["meta"]["captions"] == digit_captions(label)
        assert sample["text"] in sample["meta"]["captions"]
    labels = np.array(source.target[:300])
    test_labels = np.array([s["meta"]["label"] for s in test])
    for digit in range(10):  # >= 20% of every class held out
        assert (test_labels == digit).sum() >= math.ceil(0.2 * (labels == digit).sum())
    # Same seed, same split; another seed, another split.
    again = write_digits(tmp_path / "again", limit=300, shard_size=64, seed=3)
    assert {s["key"] for s in read_split(tmp_path / "again", "test")} == {s["key"] for s in test}
    assert again["splits"]["test"]["count"] == card["splits"]["test"]["count"]
    write_digits(tmp_path / "other", limit=300, seed=4)
    assert {s["key"] for s in read_split(tmp_path / "other", "test")} != {s["key"] for s in test}


def test_digits_nearest_upscaling_keeps_8x8_cells():
    from unimask.training.data.writers.digits import upscale_digit

    pixels = np.arange(64).reshape(8, 8) % 17
    image = upscale_digit(pixels, 64, "nearest")
    np.testing.assert_array_equal(image[::8, ::8, 0], np.rint(pixels * 255 / 16).astype(np.uint8))
    assert (image[:8, :8] == image[0, 0]).all()
    smooth = upscale_digit(pixels, 64, "bilinear")
    assert len(np.unique(smooth[..., 0])) > len(np.unique(image[..., 0]))
    with pytest.raises(DataError, match="resize"):
        upscale_digit(pixels, 64, "bicubic")


def test_digits_bad_options_raise(tmp_path):
    from unimask.training.data.writers.digits import write_digits

    with pytest.raises(DataError, match="test_fraction"):
        write_digits(tmp_path / "x", test_fraction=0.0)
    with pytest.raises(DataError, match="image_size"):
        write_digits(tmp_path / "y", image_size=4)


# ----- shapes -----------------------------------------------------------------------------------------------------
def test_shapes_json_describes_the_image_exactly_and_captions_match(tmp_path):
    from unimask.training.data.writers.shapes import render_scene, scene_captions, write_shapes

    out = tmp_path / "shapes"
    card = write_shapes(out, train=240, test=60, shard_size=50, seed=1)
    train, test = read_split(out, "train"), read_split(out, "test")
    assert_card_matches(out, card, train, test)
    assert (len(train), len(test)) == (240, 60)
    assert_disjoint(train, test)
    relations = set()
    for sample in train + test:
        scene = sample["meta"]
        # The description alone reproduces the pixels: it is exact.
        np.testing.assert_array_equal(render_scene(scene, 64), sample["image"])
        assert scene["captions"] == scene_captions(scene) and sample["text"] in scene["captions"]
        assert 1 <= len(scene["objects"]) <= 3
        assert sum(g["count"] for g in scene["groups"]) == len(scene["objects"])
        for group in scene["groups"]:
            assert group["color"] in card["colors"] and group["shape"] in card["shapes"]
        if scene["relation"]:
            relations.add(scene["relation"])
            a = [o for o in scene["objects"] if o["group"] == 0]
            b = [o for o in scene["objects"] if o["group"] == 1]
            axis, sign = {"left of": ("x", 1), "right of": ("x", -1), "above": ("y", 1), "below": ("y", -1)}[
                scene["relation"]]
            assert max(sign * o[axis] for o in a) < min(sign * o[axis] for o in b)
        for o, p in ((o, p) for i, o in enumerate(scene["objects"]) for p in scene["objects"][i + 1:]):
            assert math.hypot(o["x"] - p["x"], o["y"] - p["y"]) > (o["size"] + p["size"]) / 2  # no overlap
    assert relations == {"left of", "right of", "above", "below"}


def test_shapes_holdout_combinations_never_reach_train(tmp_path):
    from unimask.training.data.writers.shapes import write_shapes

    out = tmp_path / "holdout"
    card = write_shapes(out, train=200, test=200, seed=2, holdout_combinations=["red circle", "blue square"])
    train, test = read_split(out, "train"), read_split(out, "test")
    held = {("red", "circle"), ("blue", "square")}

    def combos(sample):
        return {(g["color"], g["shape"]) for g in sample["meta"]["groups"]}

    assert not any(combos(s) & held for s in train)
    in_test = sum(bool(combos(s) & held) for s in test)
    assert in_test > 0 and card["stats"]["test_with_holdout"] == in_test
    assert card["stats"]["train_rejected_holdout"] > 0
    assert card["holdout_combinations"] == ["blue square", "red circle"]


def test_shapes_bad_vocabulary_raises(tmp_path):
    from unimask.training.data.writers.shapes import write_shapes

    with pytest.raises(DataError, match="colors"):
        write_shapes(tmp_path / "a", train=2, test=1, colors=["red", "mauve"])
    with pytest.raises(DataError, match="held-out combination 'red blob'"):
        write_shapes(tmp_path / "b", train=2, test=1, holdout_combinations=["red blob"])
    with pytest.raises(DataError, match="every colour-shape pair"):
        write_shapes(tmp_path / "c", train=2, test=1, shapes=["circle"], colors=["red"], max_objects=1,
                     holdout_combinations=["red circle"])


# ----- folder: images + captions ----------------------------------------------------------------------------------
def test_image_folder_round_trip_with_duplicates_multi_captions_and_a_broken_file(tmp_path):
    from unimask.training.data.writers.folder import load_image, write_image_folder

    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()
    rows = []
    for i in range(14):
        Image.fromarray(rng.integers(0, 256, (80 + i, 100, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        rows.append({"file": f"im{i}.png", "caption": f"picture number {i}"})
    rows.append({"file": "im0.png", "caption": "the first picture"})  # a second caption for one image
    (images / "copy.png").write_bytes((images / "im3.png").read_bytes())  # same pixels as im3
    rows.append({"file": "copy.png", "caption": "a copy"})
    (images / "broken.png").write_bytes(b"not a png at all")
    rows.append({"file": "broken.png", "caption": "unreadable"})
    captions = tmp_path / "captions.csv"
    with captions.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "caption"])
        writer.writeheader()
        writer.writerows(rows)

    out = tmp_path / "folder"
    card = write_image_folder(out, images, captions, image_size=48, test_fraction=0.25, shard_size=4)
    train, test = read_split(out, "train"), read_split(out, "test")
    assert_card_matches(out, card, train, test)
    assert len(train) + len(test) == 15 and card["stats"]["skipped"] == 1
    assert card["stats"]["skipped_files"][0]["file"] == "broken.png"
    assert_disjoint(train, test)  # also proves im3 and its copy landed in the same split
    by_file = {s["meta"]["file"]: s for s in train + test}
    for name, sample in by_file.items():
        np.testing.assert_array_equal(sample["image"], load_image(images / name, 48))
        assert sample["image"].shape == (48, 48, 3)
    assert by_file["im0.png"]["meta"]["captions"] == ["picture number 0", "the first picture"]
    # jsonl works the same way
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows[:5]))
    card2 = write_image_folder(tmp_path / "folder2", images, jsonl, image_size=0, test_fraction=0.2)
    assert sum(v["count"] for v in card2["splits"].values()) == 5


def test_image_folder_bad_captions_file_names_the_problem(tmp_path):
    from unimask.training.data.writers.folder import read_captions

    bad = tmp_path / "c.csv"
    bad.write_text("name,description\na.png,hello\n")
    with pytest.raises(DataError, match="needs an image column"):
        read_captions(bad)
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(DataError, match=".csv or .jsonl"):
        read_captions(tmp_path / "c.txt")


def test_captions_files_in_other_encodings_are_read_or_named(tmp_path):
    from unimask.training.data.writers.folder import read_captions

    text = "file,caption\na.png,un caf\u00e9 cr\u00e8me\n"
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16"))  # with its byte-order mark
    assert read_captions(tmp_path / "utf16.csv") == {"a.png": ["un caf\u00e9 cr\u00e8me"]}
    (tmp_path / "latin1.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match="not utf-8-sig text .* --captions-encoding latin-1"):
        read_captions(tmp_path / "latin1.csv")
    assert read_captions(tmp_path / "latin1.csv", "latin-1") == {"a.png": ["un caf\u00e9 cr\u00e8me"]}


def test_an_image_too_large_to_decode_is_skipped_counted_and_reported(tmp_path, capsys, monkeypatch):
    from unimask.cli import main

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(images / f"ok{i}.png")
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(images / "huge.png")
    (images / "bad.png").write_bytes(b"not a png")
    names = [f"ok{i}.png" for i in range(4)] + ["huge.png", "bad.png"]
    (tmp_path / "c.csv").write_text("file,caption\n" + "".join(f"{n},picture {n}\n" for n in names))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300 x 300 is a "decompression bomb" now
    assert main(["data", "folder", "--images", str(images), "--captions", str(tmp_path / "c.csv"),
                 "--out", str(tmp_path / "out"), "--image-size", "32", "--test-fraction", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "skipped (not written): {'skipped': 2}" in printed and "huge.png" in printed
    card = read_card(tmp_path / "out")
    assert sum(v["count"] for v in card["splits"].values()) == 4 and card["stats"]["skipped"] == 2


# ----- folder: robot episodes -------------------------------------------------------------------------------------
def _episode(rng, length, with_state=True, instruction="stack the blocks"):
    data = {"images": rng.integers(0, 256, (length, 32, 32, 3), dtype=np.uint8),
            "actions": rng.uniform(-1, 1, (length, 3)).astype(np.float32)}
    if with_state:
        data["state"] = rng.normal(size=(length, 5)).astype(np.float32)
    if instruction:
        data["instruction"] = np.array(instruction)
    return data


def test_episode_folder_chunks_pad_and_split_by_episode(tmp_path):
    from unimask.training.data.writers.folder import write_episode_folder

    rng = np.random.default_rng(1)
    episodes_dir = tmp_path / "eps"
    episodes_dir.mkdir()
    source = {}
    for i, length in enumerate([5, 11, 3, 8, 6]):
        data = _episode(rng, length)
        np.savez(episodes_dir / f"ep{i}.npz", **data)
        source[f"ep{i}.npz"] = data
    out = tmp_path / "robot"
    card = write_episode_folder(out, episodes_dir, horizon=4, test_fraction=0.4, shard_size=7)
    train, test = read_split(out, "train"), read_split(out, "test")
    assert_card_matches(out, card, train, test)
    assert card["action_dim"] == 3 and card["state_dim"] == 5 and card["horizon"] == 4
    assert len(train) + len(test) == 33
    assert_disjoint(train, test)
    assert not {s["meta"]["file"] for s in train} & {s["meta"]["file"] for s in test}
    for sample in train + test:
        data, t = source[sample["meta"]["file"]], sample["meta"]["step"]
        length = len(data["actions"])
        valid = min(4, length - t)
        assert sample["meta"]["valid_steps"] == valid and sample["meta"]["episode_length"] == length
        np.testing.assert_array_equal(sample["actions"][:valid], data["actions"][t:t + valid])
        np.testing.assert_array_equal(sample["actions"][valid:], np.repeat(data["actions"][-1:], 4 - valid, 0))
        np.testing.assert_array_equal(sample["state"], data["state"][t])
        np.testing.assert_array_equal(sample["image"], data["images"][t])
        assert sample["text"] == "stack the blocks" and sample["actions"].dtype == np.float32


def test_episode_folder_errors(tmp_path):
    from unimask.training.data.writers.folder import read_episode, write_episode_folder

    rng = np.random.default_rng(2)
    bad = _episode(rng, 4, instruction=None)
    np.savez(tmp_path / "noinstr.npz", **bad)
    with pytest.raises(DataError, match="instruction"):
        read_episode(tmp_path / "noinstr.npz")
    assert read_episode(tmp_path / "noinstr.npz", "pick it up")["instruction"] == "pick it up"
    wrong = _episode(rng, 4)
    wrong["actions"] = wrong["actions"][:3]
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(DataError, match="4 images but 3 actions"):
        read_episode(tmp_path / "wrong.npz")
    with pytest.raises(DataError, match="no .npz/.hdf5"):
        write_episode_folder(tmp_path / "out", tmp_path / "missing")


def test_episode_folder_reads_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    from unimask.training.data.writers.folder import read_episode

    data = _episode(np.random.default_rng(3), 6, instruction=None)
    with h5py.File(tmp_path / "e.hdf5", "w") as handle:
        for k, v in data.items():
            handle[k] = v
        handle.attrs["instruction"] = "open it"
    episode = read_episode(tmp_path / "e.hdf5")
    np.testing.assert_array_equal(episode["images"], data["images"])
    assert episode["instruction"] == "open it"


# ----- shard writer and CLI ---------------------------------------------------------------------------------------
def test_shard_writer_rejects_duplicate_and_dotted_keys(tmp_path):
    from unimask.training.data.format import DatasetWriter, make_sample

    with pytest.raises(DataError, match="webdataset splits at dots"):
        make_sample("a.b", text="x")
    with DatasetWriter(tmp_path / "d", "t") as writer:
        writer.write("train", make_sample("k1", text="x"))
        with pytest.raises(DataError, match="duplicate sample key"):
            writer.write("train", make_sample("k1", text="y"))
        card = writer.finish({"source": "test"})
    assert card["splits"] == {"train": {"count": 1, "shards": ["train/t-000000.tar"],
                                        "shard_counts": {"train/t-000000.tar": 1}},
                              "test": {"count": 0, "shards": [], "shard_counts": {}}}


def test_cli_writes_digits_and_reports_errors(tmp_path, capsys):
    from unimask.cli import main

    out = tmp_path / "cli-digits"
    assert main(["data", "digits", "--out", str(out), "--image-size", "32", "--resize", "nearest"]) == 0
    card = json.loads((out / CARD_FILE).read_text())
    assert card["image_size"] == [32, 32] and card["resize"] == "nearest"
    assert card["command"].startswith("unimask data digits") and "--resize nearest" in card["command"]
    assert sum(v["count"] for v in card["splits"].values()) == 1797
    assert "wrote" in capsys.readouterr().out
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--colors", "red,mauve"]) == 2
    assert "mauve" in capsys.readouterr().err
