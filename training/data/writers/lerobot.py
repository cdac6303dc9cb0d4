"""A local LeRobotDataset (format v3.0, or v2.0 / v2.1) -> per-step VLA shards (`unimask data lerobot`).

Read with pyarrow and PyAV only (the `lerobot` package is not needed). Mapping from LeRobot features to the
sample keys of every robot dataset here (see `episodes`; one sample per frame t of an episode of length T):

    LeRobot                                              unimask sample
    camera feature (`--camera`, default: the first       png          frame t, centre-cropped and resized to
      `observation.image` / `observation.images.<name>`)              `image_size` (0 keeps the decoded size)
      dtype video: the mp4 frame at from_timestamp + timestamp
      dtype image: the PNG bytes in the data parquet
    task_index -> meta/tasks (the task string)           txt          the task of frame t (LeRobot's instruction)
                                                         json.instructions  [that task]
    `--action-key` (default `action`), frames t..t+H-1   actions.npy  float32 [H, D], last action repeated past the
                                                                      episode end; json.valid_steps = min(H, T - t)
    `--state-key` (default `observation.state`)          state.npy    float32 [S] at frame t (absent: no state)
    episode_index, frame_index                           json.episode, json.step (plus episode_length, camera)

Episodes are split whole between train and test (a seeded permutation of the episodes), test first, and train
steps whose frame equals a test frame are dropped, exactly like `data folder --episodes`. An episode whose video
(or embedded image) cannot be decoded is skipped and counted in the card's `stats.skipped_episodes`; every other
inconsistency (missing keys or files, parquet and video disagreeing on an episode's frames) raises a DataError.

Layouts: v3.0 keeps many episodes per data parquet and per mp4 and locates each episode through
meta/episodes/*/*.parquet (data file, video file, from_timestamp); v2.x has one parquet and one mp4 (starting at 0 s)
per episode, listed in meta/episodes.jsonl. Paths come from info.json's `data_path` / `video_path` templates.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ..format import DataError, DatasetWriter, check_key, content_hash, make_sample
from .episodes import action_chunk, check_episode

SUPPORTED_VERSIONS = ("v3.0", "v2.1", "v2.0")  # v2.0 and v2.1 differ only in their statistics files
# LeRobot's own default: a decoded video frame must lie within 0.1 ms of the time the parquet asks for.
TIMESTAMP_TOLERANCE_S = 1e-4
VISUAL_DTYPES = ("video", "image")
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # in every LeRobot dataset


class UndecodableEpisode(Exception):
    """A video or embedded image of one episode cannot be decoded: the episode is skipped and counted."""


@dataclass
class Episode:
    index: int
    length: int  # frames, from the episodes metadata
    data_file: Path
    video_file: Path | None  # the camera's mp4 (None when the camera is an image feature)
    video_start: float  # the episode's from_timestamp inside video_file (always 0 in v2.x)


# ----- metadata ---------------------------------------------------------------------------------------------------
def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json with its version checked; adds `_layout` ("v3" or "v2")."""
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DataError(f"{root} has no meta/info.json; --root must be a LeRobotDataset folder (the one holding "
                        "meta/, data/ and videos/).")
    info = json.loads(path.read_text())
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise DataError(f"{path}: codebase_version {version!r} is not supported; supported: "
                        f"{', '.join(SUPPORTED_VERSIONS)} (convert the dataset with LeRobot's converter scripts).")
    if not info.get("fps", 0) > 0 or not isinstance(info.get("features"), dict):
        raise DataError(f"{path} needs `fps` > 0 and a `features` dict (got fps={info.get('fps')!r}).")
    info["_layout"] = "v3" if version.startswith("v3") else "v2"
    return info


def choose_camera(features: dict[str, Any], camera: str | None) -> str:
    """`camera`, or the first visual feature that is not a depth map."""
    visual = [k for k, f in features.items() if f.get("dtype") in VISUAL_DTYPES]
    if camera is None:
        # Older files keep the video block under `video_info` and the flag as `video.is_depth_map`.
        blocks = {k: features[k].get("info") or features[k].get("video_info") or {} for k in visual}
        colour = [k for k in visual if not (blocks[k].get("is_depth_map") or blocks[k].get("video.is_depth_map"))]
        if not colour:
            raise DataError(f"the dataset has no image or video feature (features: {sorted(features)}); "
                            "a VLA sample needs a camera.")
        return colour[0]
    if camera not in visual:
        raise DataError(f"--camera {camera!r} is not an image/video feature of the dataset; available cameras: "
                        f"{visual or 'none'}.")
    return camera


def check_vector_key(features: dict[str, Any], key: str, option: str) -> None:
    vectors = [k for k, f in features.items()
               if f.get("dtype") not in VISUAL_DTYPES + ("string", "language") and k not in BOOKKEEPING]
    if key not in vectors:
        raise DataError(f"{option} {key!r} is not a numeric feature of the dataset; choose one of {vectors}.")


def read_tasks(root: Path, layout: str) -> dict[int, str]:
    """{task_index: task string}. v3: meta/tasks.parquet (the string is the pandas index); v2: meta/tasks.jsonl."""
    if layout == "v3":
        import pyarrow.parquet as pq

        path = root / "meta" / "tasks.parquet"
        if not path.is_file():
            raise DataError(f"{path} is missing; a v3.0 dataset keeps its task strings there.")
        table = pq.read_table(path)
        text = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
        if text is None or "task_index" not in table.column_names:
            raise DataError(f"{path} needs columns `task_index` and `task`; it has {table.column_names}.")
        return dict(zip(table["task_index"].to_pylist(), map(str, table[text].to_pylist())))
    rows = _jsonl(root / "meta" / "tasks.jsonl")
    return {int(r["task_index"]): str(r["task"]) for r in rows}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path} is missing; a v2.x dataset keeps its metadata there.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_episodes(root: Path, info: dict[str, Any], camera: str) -> list[Episode]:
    """Every episode's frame count and files, sorted by episode index."""
    is_video = info["features"][camera]["dtype"] == "video"
    data_template, video_template = info.get("data_path"), info.get("video_path")
    if not data_template or (is_video and not video_template):
        raise DataError(f"{root}/meta/info.json lacks `data_path` or `video_path` (the file path templates of its "
                        f"format {info['codebase_version']}); the metadata is damaged: re-download the dataset.")
    episodes = []
    if info["_layout"] == "v2":
        chunk_size = int(info.get("chunks_size") or 1000)
        for row in _jsonl(root / "meta" / "episodes.jsonl"):
            index = int(row["episode_index"])
            where = {"episode_chunk": index // chunk_size, "episode_index": index}
            video = root / video_template.format(video_key=camera, **where) if is_video else None
            episodes.append(Episode(index, int(row["length"]), root / data_template.format(**where), video, 0.0))
        return sorted(episodes, key=lambda e: e.index)
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise DataError(f"{root}/meta/episodes/ holds no parquet files; a v3.0 dataset lists its episodes there.")
    video_columns = [f"videos/{camera}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    columns = ["episode_index", "length", "data/chunk_index", "data/file_index"] + (video_columns if is_video else [])
    for path in files:
        missing = [c for c in columns if c not in pq.read_schema(path).names]
        if missing:
            raise DataError(f"{path} lacks the columns {missing} (camera {camera!r}); the episodes metadata is "
                            "incomplete: re-download the dataset or pick another --camera.")
    for row in pa.concat_tables([pq.read_table(p, columns=columns) for p in files]).to_pylist():
        data = root / data_template.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        video = root / video_template.format(video_key=camera, chunk_index=row[video_columns[0]],
                                             file_index=row[video_columns[1]]) if is_video else None
        start = float(row[video_columns[2]]) if is_video else 0.0
        episodes.append(Episode(int(row["episode_index"]), int(row["length"]), data, video, start))
    return sorted(episodes, key=lambda e: e.index)


# ----- one episode ------------------------------------------------------------------------------------------------
def read_episode_rows(episode: Episode, columns: list[str]) -> Any:
    """The episode's rows of its data parquet (only `columns`), sorted by frame_index and checked."""
    import pyarrow.parquet as pq

    if not episode.data_file.is_file():
        raise DataError(f"episode {episode.index}: data file {episode.data_file} is missing; re-download the dataset.")
    missing = [c for c in columns if c not in pq.read_schema(episode.data_file).names]
    if missing:
        raise DataError(f"{episode.data_file} has no column {missing} (declared in info.json features); the data "
                        "files do not match the metadata: re-download the dataset.")
    table = pq.read_table(episode.data_file, columns=columns, filters=[("episode_index", "=", episode.index)])
    table = table.sort_by("frame_index")
    frame_index = table["frame_index"].to_numpy()
    if len(table) != episode.length or not np.array_equal(frame_index, np.arange(len(table))):
        raise DataError(f"episode {episode.index}: the episodes metadata says {episode.length} frames but "
                        f"{episode.data_file.name} holds {len(table)} rows with frame_index "
                        f"{frame_index[:3].tolist()}...; frame_index must run 0..length-1: the dataset is damaged.")
    return table


def vector_column(table: Any, key: str, where: str) -> np.ndarray:
    """float32 [T, D] from a fixed-size list, list, or scalar column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table[key].combine_chunks()
    if column.null_count:
        raise DataError(f"{where}: column {key!r} has {column.null_count} missing values.")
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        return column.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), 1)
    lengths = np.unique(pc.list_value_length(column).to_numpy())
    if len(lengths) != 1:
        raise DataError(f"{where}: rows of {key!r} have different lengths {lengths.tolist()}; it must be a vector.")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(column), int(lengths[0]))


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size (bicubic), like `data folder`; size 0 keeps the image."""
    if not size:
        return np.ascontiguousarray(image)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side]), "RGB")
    return np.asarray(square if side == size else square.resize((size, size), Image.BICUBIC))


def decode_video(path: Path, times: np.ndarray, image_size: int) -> list[np.ndarray | None]:
    """The frames of `path` at `times` (s), as LeRobot picks them: the decoded frame nearest each time, within
    TIMESTAMP_TOLERANCE_S. A time with no such frame gives None (the caller reports the mismatch)."""
    import av

    frames: list[np.ndarray | None] = [None] * len(times)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if times.min() > 0:  # seek to the keyframe before the episode (one tick early, as LeRobot does)
                target = max(0, round(float(times.min()) / float(stream.time_base)) - 1)
                container.seek(target, backward=True, any_frame=False, stream=stream)
            for frame in (f for f in container.decode(stream) if f.pts is not None):
                t = float(frame.pts * stream.time_base)
                nearest = int(np.abs(times - t).argmin())
                if abs(times[nearest] - t) <= TIMESTAMP_TOLERANCE_S and frames[nearest] is None:
                    frames[nearest] = square_resize(frame.to_ndarray(format="rgb24"), image_size)
                if t >= times.max():
                    break
    except (av.error.FFmpegError, IndexError) as err:  # IndexError: the file holds no video stream
        raise UndecodableEpisode(f"{path.name}: {type(err).__name__}: {err}") from None
    return frames


def episode_frames(episode: Episode, table: Any, camera: str, image_size: int) -> np.ndarray:
    """uint8 [T, S, S, 3] camera frames of one episode."""
    if episode.video_file is None:  # image feature: PNG bytes in a struct<bytes, path> column
        images = []
        for step, cell in enumerate(table[camera].to_pylist()):
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise UndecodableEpisode(f"{camera} frame {step} holds no embedded image bytes (only a path?)")
            try:
                with Image.open(io.BytesIO(data)) as image:
                    images.append(square_resize(np.asarray(image.convert("RGB")), image_size))
            except Exception as err:  # noqa: BLE001 - any unreadable image makes the episode undecodable
                raise UndecodableEpisode(f"{camera} frame {step}: {type(err).__name__}: {err}") from None
        return np.stack(images)
    if not episode.video_file.is_file():
        raise DataError(f"episode {episode.index}: video {episode.video_file} of {camera!r} is missing; download the "
                        "dataset's videos/ folder too.")
    # timestamp is within the episode; LeRobot asks the mp4 for from_timestamp + timestamp.
    times = episode.video_start + table["timestamp"].to_numpy().astype(np.float64)
    frames = decode_video(episode.video_file, times, image_size)
    found = sum(f is not None for f in frames)
    if found < len(frames):
        raise DataError(f"episode {episode.index}: the data parquet has {len(frames)} frames but video {camera!r} "
                        f"({episode.video_file}) has only {found} of them "
                        f"(frames at from_timestamp {episode.video_start:.4f} s + timestamp); the parquet and the "
                        "video disagree: re-download or re-encode the dataset, or pick another --camera.")
    return np.stack(frames)


def load_episode(episode: Episode, keys: dict[str, Any], task_of: dict[int, str], image_size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """(frames, actions, states or None, task per frame) of one episode; UndecodableEpisode if a frame is not."""
    columns = ["episode_index", "frame_index", "task_index", keys["action"]] + [keys["state"]] * bool(keys["state"])
    table = read_episode_rows(episode, columns + ([keys["camera"]] if episode.video_file is None else ["timestamp"]))
    frames = episode_frames(episode, table, keys["camera"], image_size)
    where = f"episode {episode.index} ({episode.data_file.name})"
    actions = vector_column(table, keys["action"], where)
    states = vector_column(table, keys["state"], where) if keys["state"] else None
    check_episode(frames, actions, states, where)
    task_index = table["task_index"].to_pylist()
    unknown = sorted(set(task_index) - set(task_of))
    if unknown:
        raise DataError(f"{where}: task_index {unknown} is not in the tasks table (which has {sorted(task_of)}); "
                        "the metadata is damaged: re-download the dataset.")
    return frames, actions, states, [task_of[i] for i in task_index]


def step_samples(episode: int, frames: np.ndarray, actions: np.ndarray, states: np.ndarray | None,
                 tasks: list[str], horizon: int, split: str, camera: str) -> Iterator[tuple[dict[str, Any], str]]:
    """(sample, frame hash) per step, as `episodes.episode_samples` makes them but with each frame's own task as
    its instruction (a LeRobot episode may change task mid-way; episode_samples takes one list per episode)."""
    for t in range(len(actions)):
        chunk, valid = action_chunk(actions, t, horizon)
        meta = {"source": "lerobot", "tasks": ["vla"], "split": split, "episode": episode, "step": t,
                "episode_length": len(actions), "valid_steps": valid, "instructions": [tasks[t]], "camera": camera}
        sample = make_sample(check_key(f"lerobot-e{episode:06d}-t{t:05d}"), image=frames[t], text=tasks[t],
                             actions=chunk, state=None if states is None else states[t], meta=meta)
        yield sample, content_hash(frames[t])


# ----- the writer -------------------------------------------------------------------------------------------------
def resolve_keys(features: dict[str, Any], camera: str | None, state_key: str | None, action_key: str
                 ) -> dict[str, Any]:
    """{"camera", "state" (None: no state), "action"}, checked against the dataset's features."""
    check_vector_key(features, action_key, "--action-key")
    if state_key is None:  # LeRobot's conventional name; a dataset without it simply has no state
        state_key = "observation.state" if "observation.state" in features else None
    elif state_key.lower() == "none":
        state_key = None
    if state_key is not None:
        check_vector_key(features, state_key, "--state-key")
    return {"camera": choose_camera(features, camera), "state": state_key, "action": action_key}


def held_out_episodes(episodes: list[Episode], test_fraction: float, seed: int) -> set[int]:
    """Indices of the held-out episodes: ceil(test_fraction * n) of a seeded permutation (none if n == 1)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(len(episodes))
    n_test = math.ceil(test_fraction * len(episodes)) if len(episodes) > 1 else 0
    return {episodes[i].index for i in order[:n_test]}


def write_split(writer: DatasetWriter, split: str, episodes: list[Episode], keys: dict[str, Any],
                task_of: dict[int, str], image_size: int, horizon: int, stats: dict[str, Any]) -> set[tuple]:
    """Write the steps of `episodes` to `split`, skipping undecodable episodes; returns the episodes'
    (action dim, state dim, frame size) and counts episodes, skips and instructions in `stats`."""
    shapes = set()
    for episode in episodes:
        try:
            frames, actions, states, tasks = load_episode(episode, keys, task_of, image_size)
        except UndecodableEpisode as err:
            stats["skipped_episodes"] += 1
            stats["skipped"] = (stats["skipped"] + [{"episode": episode.index, "reason": str(err)}])[:20]
            continue
        stats["episodes"][split] += 1
        stats["instructions"].update(tasks)
        shapes.add((actions.shape[1], None if states is None else states.shape[1], tuple(frames.shape[1:3])))
        for sample, digest in step_samples(episode.index, frames, actions, states, tasks, horizon, split,
                                           keys["camera"]):
            if split == "train" and digest in writer.hashes["test"]:
                stats["train_steps_dropped_duplicate"] += 1
                continue
            writer.write(split, sample, image_hash=digest)
    return shapes


def write_lerobot(out: str | Path, root: str | Path, *, camera: str | None = None, state_key: str | None = None,
                  action_key: str = "action", image_size: int = 64, horizon: int = 8, test_fraction: float = 0.1,
                  seed: int = 0, shard_size: int = 2000, max_episodes: int | None = None,
                  command: str | None = None) -> dict[str, Any]:
    """Convert the LeRobotDataset at `root` into per-step VLA shards in `out`; returns the card.

    `state_key=None` uses `observation.state` when the dataset has it (else no state); "none" disables the state.
    `max_episodes` keeps the first N episodes (by episode index) before splitting.
    """
    started = time.time()
    for name, value, low in (("image_size", image_size, 0), ("horizon", horizon, 1),
                             ("max_episodes", 1 if max_episodes is None else max_episodes, 1)):
        if value < low:
            raise DataError(f"`{name}` must be >= {low}, got {value}.")
    root = Path(root).expanduser().resolve()
    info = read_info(root)
    keys = resolve_keys(info["features"], camera, state_key, action_key)
    task_of = read_tasks(root, info["_layout"])
    episodes = read_episodes(root, info, keys["camera"])[:max_episodes]
    if not episodes:
        raise DataError(f"{root} lists no episodes.")
    test_ids = held_out_episodes(episodes, test_fraction, seed)
    stats: dict[str, Any] = {"episodes": {"train": 0, "test": 0}, "skipped_episodes": 0, "skipped": [],
                             "train_steps_dropped_duplicate": 0, "instructions": set()}
    with DatasetWriter(out, "lerobot", maxcount=shard_size, started=started) as writer:
        # Test episodes first, so train steps with a frame identical to a test frame can be dropped.
        shapes = set()
        for split in ("test", "train"):
            members = [e for e in episodes if (e.index in test_ids) == (split == "test")]
            shapes |= write_split(writer, split, members, keys, task_of, image_size, horizon, stats)
        if not shapes:
            raise DataError(f"none of the {len(episodes)} episodes could be decoded; first problem: "
                            f"{stats['skipped'][0]['reason']}.")
        if len(shapes) != 1:
            raise DataError(f"episodes disagree on (action dim, state dim, frame size): {sorted(shapes)}.")
        (action_dim, state_dim, frame_size), = shapes
        instructions = sorted(stats.pop("instructions"))
        return writer.finish({
            "source": "lerobot", "source_path": str(root), "codebase_version": info["codebase_version"],
            "description": f"LeRobotDataset {root.name} ({info['codebase_version']}), camera {keys['camera']}",
            "robot_type": info.get("robot_type"), "seed": seed, "image_size": list(frame_size),
            "test_fraction": test_fraction, "tasks": ["vla"], "horizon": horizon, "fps": info["fps"],
            "camera": keys["camera"], "action_key": keys["action"], "state_key": keys["state"],
            "action_dim": action_dim, "state_dim": state_dim, "instructions": instructions, "stats": stats,
            "command": command,
        })
