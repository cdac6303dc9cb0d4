"""Converters for a user's own data: an image folder with a captions file, and robot episode files.

Images + captions (`unimask data folder --images DIR --captions FILE`):
- FILE is a `.csv` with a header row or a `.jsonl` file; each row names an image (column `file`, `image` or `path`,
  relative to DIR or absolute) and a caption (column `caption` or `text`). Several rows for one image give it several
  captions (`txt` holds one, `json.captions` all).
- Images are centre-cropped to a square and resized to `image_size` (bicubic); `image_size=0` keeps them as they are.
- The split is by image content: identical images (same pixels after resizing) always land in the same split.
- Unreadable images are skipped and counted in the card (`stats.skipped`, with the first file names).

Robot episodes (`unimask data folder --episodes DIR`): every `*.npz` (or `*.hdf5` / `*.h5`, needs `h5py`) file is
one episode with `images` uint8 [T, H, W, 3], `actions` float [T, D], optional `state` [T, S] and optional
`instruction` (a string; otherwise `--instruction` is used). Episodes are split whole (never across splits) and
stored as per-step samples with action chunks, exactly like the Meta-World writer (`unimask.training.data.writers.episodes`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from unimask.errors import check_number

from .episodes import check_episode, episode_samples
from ..format import MAX_IMAGE_SIZE, DataError, DatasetWriter, content_hash, make_sample

FILE_COLUMNS = ("file", "image", "path")
TEXT_COLUMNS = ("caption", "text")
EPISODE_SUFFIXES = (".npz", ".hdf5", ".h5")


def _captions_text(path: Path, encoding: str | None) -> str:
    """The captions file as text: in `encoding` when given, else UTF-16 when it starts with a UTF-16 byte-order mark,
    else UTF-8 (with or without its mark); a file in another encoding is refused with the option that reads it."""
    data = path.read_bytes()
    if encoding is None:
        encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not {encoding} text (byte {err.start}: {err.reason}); give its encoding with "
                        "--captions-encoding, e.g. --captions-encoding latin-1.") from None
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1."
                        ) from None


def read_captions(path: str | Path, encoding: str | None = None) -> dict[str, list[str]]:
    """{file name: [captions]} from a .csv (with header) or .jsonl captions file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"captions file {path} does not exist.")
    text = _captions_text(path, encoding)
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number} is not valid JSON ({err}); one object per line.") from None
    else:
        raise DataError(f"captions file must end in .csv or .jsonl, got {path.name}.")
    captions: dict[str, list[str]] = {}
    for number, row in enumerate(rows, 1):
        file_col = next((c for c in FILE_COLUMNS if c in row), None)
        text_col = next((c for c in TEXT_COLUMNS if c in row), None)
        if file_col is None or text_col is None:
            raise DataError(f"{path} row {number} needs an image column ({'/'.join(FILE_COLUMNS)}) and a caption "
                            f"column ({'/'.join(TEXT_COLUMNS)}); it has {sorted(row)}.")
        text = str(row[text_col] or "").strip()
        if text:
            captions.setdefault(str(row[file_col]), []).append(text)
    if not captions:
        raise DataError(f"{path} holds no (image, caption) rows.")
    return captions


def load_image(path: Path, image_size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image_size:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
            if side != image_size:
                image = image.resize((image_size, image_size), Image.BICUBIC)
        return np.asarray(image)


def _test_groups(hashes: Sequence[str], test_fraction: float, seed: int) -> set[str]:
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    unique = sorted(set(hashes))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = max(1, math.ceil(test_fraction * len(unique))) if len(unique) > 1 else 0
    return {unique[i] for i in order[:n_test]}


def write_image_folder(out: str | Path, images: str | Path, captions: str | Path, *, image_size: int = 64,
                       test_fraction: float = 0.1, seed: int = 0, shard_size: int = 1000,
                       captions_encoding: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Write a captioned image folder as a dataset; returns the card."""
    started = time.time()
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"image folder {images} does not exist.")
    check_number("image_size", image_size, 0, MAX_IMAGE_SIZE, integer=True, fix="0 keeps the original size",
                 error=DataError)
    table = read_captions(captions, captions_encoding)
    loaded: list[tuple[str, np.ndarray, list[str], str]] = []
    skipped: list[dict[str, str]] = []
    for name, texts in table.items():
        path = Path(name) if Path(name).is_absolute() else images / name
        try:
            pixels = load_image(path, image_size)
        except (FileNotFoundError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
            skipped.append({"file": name, "reason": f"{type(err).__name__}: {err}"})
            continue
        loaded.append((name, pixels, texts, content_hash(pixels)))
    if not loaded:
        raise DataError(f"none of the {len(table)} images in {captions} could be read; first problem: {skipped[0]}.")
    test_hashes = _test_groups([h for *_, h in loaded], test_fraction, seed)
    rng = np.random.default_rng(seed + 1)
    sizes = set()
    with DatasetWriter(out, "folder", maxcount=shard_size, started=started) as writer:
        for index, (name, pixels, texts, digest) in enumerate(loaded):
            split = "test" if digest in test_hashes else "train"
            sizes.add(pixels.shape[:2])
            meta = {"source": "folder", "tasks": ["t2i", "i2t"], "split": split, "file": name, "captions": texts}
            sample = make_sample(f"img-{index:07d}", image=pixels, text=texts[int(rng.integers(len(texts)))],
                                 meta=meta)
            writer.write(split, sample, image_hash=digest)
        return writer.finish({
            "source": "folder",
            "description": f"images from {images} captioned by {captions}",
            "seed": seed,
            "image_size": [image_size, image_size] if image_size else _sizes(sizes),
            "test_fraction": test_fraction,
            "tasks": ["t2i", "i2t"],
            "stats": {"skipped": len(skipped), "skipped_files": skipped[:20]},
            "action_dim": None,
            "state_dim": None,
            "command": command,
        })


def _sizes(sizes: set) -> list:
    """[H, W] when every image has one size, else the sorted list of sizes."""
    listed = sorted([int(h), int(w)] for h, w in sizes)
    return listed[0] if len(listed) == 1 else listed


def read_episode(path: str | Path, default_instruction: str | None = None) -> dict[str, Any]:
    """{"images", "actions", "state" (or None), "instruction"} from one .npz / .hdf5 episode file."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
    elif path.suffix.lower() in (".hdf5", ".h5"):
        try:
            import h5py
        except ImportError:
            raise DataError(f"reading {path.name} needs h5py: pip install h5py (or convert the episodes to .npz)."
                            ) from None
        with h5py.File(path, "r") as data:
            fields = {k: data[k][()] for k in data.keys()}
            if "instruction" in data.attrs:
                fields["instruction"] = data.attrs["instruction"]
    else:
        raise DataError(f"episode files must be .npz, .hdf5 or .h5, got {path.name}.")
    missing = [k for k in ("images", "actions") if k not in fields]
    if missing:
        raise DataError(f"{path} lacks {missing}; an episode needs `images` [T,H,W,3] and `actions` [T,D] "
                        f"(it has {sorted(fields)}).")
    instruction = fields.get("instruction", default_instruction)
    if isinstance(instruction, bytes):
        instruction = instruction.decode("utf-8")
    if isinstance(instruction, np.ndarray):
        instruction = instruction.item()
        instruction = instruction.decode("utf-8") if isinstance(instruction, bytes) else instruction
    if not instruction:
        raise DataError(f"{path} has no `instruction`; store one in the file or pass --instruction.")
    episode = {"images": np.asarray(fields["images"]), "actions": np.asarray(fields["actions"], dtype=np.float32),
               "state": None if "state" not in fields else np.asarray(fields["state"], dtype=np.float32),
               "instruction": str(instruction)}
    check_episode(episode["images"], episode["actions"], episode["state"], str(path))
    return episode


def write_episode_folder(out: str | Path, episodes: str | Path, *, instruction: str | None = None, horizon: int = 8,
                         test_fraction: float = 0.1, seed: int = 0, shard_size: int = 2000,
                         command: str | None = None) -> dict[str, Any]:
    """Write a folder of robot episode files as per-step VLA samples; returns the card."""
    started = time.time()
    episodes = Path(episodes)
    files = sorted(p for p in episodes.iterdir() if p.suffix.lower() in EPISODE_SUFFIXES) if episodes.is_dir() else []
    if not files:
        raise DataError(f"no .npz/.hdf5 episode files in {episodes}.")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(len(files))
    n_test = math.ceil(test_fraction * len(files)) if len(files) > 1 else 0
    test_ids = set(int(i) for i in order[:n_test])
    rng = np.random.default_rng(seed + 1)
    dims: dict[str, set] = {"action": set(), "state": set(), "image": set()}
    stats = {"episodes": {"train": 0, "test": 0}, "train_steps_dropped_duplicate": 0}
    instructions: set[str] = set()
    with DatasetWriter(out, "episodes", maxcount=shard_size, started=started) as writer:
        # Test episodes first, so train steps with a frame identical to a test frame can be dropped.
        for split in ("test", "train"):
            for index, path in enumerate(files):
                if (index in test_ids) != (split == "test"):
                    continue
                ep = read_episode(path, instruction)
                dims["action"].add(ep["actions"].shape[1])
                dims["image"].add(ep["images"].shape[1:3])
                if ep["state"] is not None:
                    dims["state"].add(ep["state"].shape[1])
                instructions.add(ep["instruction"])
                stats["episodes"][split] += 1
                for sample, digest in episode_samples("ep", index, ep["images"], ep["actions"], ep["state"],
                                                      [ep["instruction"]], horizon, rng, split, "folder",
                                                      {"file": path.name}):
                    if split == "train" and digest in writer.hashes["test"]:
                        stats["train_steps_dropped_duplicate"] += 1
                        continue
                    writer.write(split, sample, image_hash=digest)
        if len(dims["action"]) != 1 or len(dims["state"]) > 1:
            raise DataError(f"episodes disagree on action/state dimensions: {dims['action']} / {dims['state']}.")
        return writer.finish({
            "source": "folder-episodes",
            "description": f"robot episodes from {episodes}",
            "seed": seed,
            "image_size": _sizes(dims["image"]),
            "test_fraction": test_fraction,
            "tasks": ["vla"],
            "horizon": horizon,
            "action_dim": dims["action"].pop(),
            "state_dim": dims["state"].pop() if dims["state"] else None,
            "instructions": sorted(instructions),
            "stats": stats,
            "command": command,
        })
