"""Tiny LeRobotDatasets on disk, in LeRobot's exact v3.0 and v2.1 layouts, written with pyarrow + PyAV only.

Every frame carries its global frame index as a colour, so a reader can prove the right frame reached the right
sample after video decoding: the camera `observation.images.top` (dtype video, h264 at qp 0, lossless in YUV, so
grey levels come back within +-1) shows grey level `frame_level(i)` in its centred square and black margins left and
right; the camera `observation.images.wrist` (dtype image, PNG bytes in the data parquet) shows `wrist_colour(i)`.

`check_layout` asserts the invariants LeRobot's reader relies on (timestamps = frame_index / fps, a contiguous
global index, positional episode and task rows, episode ranges, video times), so the fixture cannot drift from the
format without a test failing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TOP, WRIST = "observation.images.top", "observation.images.wrist"
TASKS = ("push the puck to the goal", "open the drawer")
V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def frame_level(index: int) -> int:
    return 16 * (index + 1)  # 16 grey levels apart: a frame off by one is unmistakable (needs <= 15 frames)


def top_image(index: int, height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    left = (width - height) // 2
    image[:, left:left + height] = frame_level(index)  # a centre crop keeps exactly this square
    return image


def wrist_colour(index: int) -> tuple[int, int, int]:
    return frame_level(index), 255 - frame_level(index), 7 * index % 256


def wrist_image(index: int, side: int = 48) -> np.ndarray:
    return np.broadcast_to(np.array(wrist_colour(index), np.uint8), (side, side, 3)).copy()


def frame_tasks(lengths: Sequence[int]) -> list[int]:
    """task_index per frame: episode e does task e % 2; the last episode switches task half-way."""
    out = []
    for e, n in enumerate(lengths):
        ids = [e % 2] * n
        if e == len(lengths) - 1 and n > 1:
            ids[n // 2:] = [(e + 1) % 2] * (n - n // 2)
        out += ids
    return out


def frame_columns(lengths: Sequence[int], fps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The data columns of all frames (global order); state and action are seeded random float32 [N, 4]."""
    rng = np.random.default_rng(seed)
    total = sum(lengths)
    return {
        "observation.state": rng.standard_normal((total, 4)).astype(np.float32),
        "action": rng.uniform(-1, 1, (total, 4)).astype(np.float32),
        "frame_index": np.concatenate([np.arange(n) for n in lengths]),
        "episode_index": np.repeat(np.arange(len(lengths)), lengths),
        "index": np.arange(total),
        "task_index": np.array(frame_tasks(lengths)),
    }


def data_table(columns: dict[str, np.ndarray], rows: slice, fps: int, wrist: bool) -> Any:
    import pyarrow as pa

    vec4 = pa.list_(pa.float32(), 4)  # fixed_size_list<float>[4], as datasets writes Sequence(length=4)
    frame_index = columns["frame_index"][rows]
    table = {
        "observation.state": pa.array(list(columns["observation.state"][rows]), vec4),
        "action": pa.array(list(columns["action"][rows]), vec4),
        "timestamp": pa.array(frame_index / fps, pa.float32()),
        **{k: pa.array(columns[k][rows], pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
    }
    if wrist:
        from PIL import Image

        cells = []
        for i in columns["index"][rows]:
            buffer = io.BytesIO()
            Image.fromarray(wrist_image(int(i))).save(buffer, format="PNG")
            cells.append({"bytes": buffer.getvalue(), "path": f"frame-{int(i):06d}.png"})
        table[WRIST] = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    return pa.table(table)


def encode_video(path: Path, frame_ids: Sequence[int], fps: int, height: int, width: int) -> dict[str, Any]:
    """h264 mp4 of the given global frames back to back (frame k at k / fps); returns LeRobot's video info block."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        # g=2 like LeRobot (fast seeks), no B-frames (pts in order), qp=0: lossless in YUV.
        stream = container.add_stream("h264", rate=fps, options={"g": "2", "bf": "0", "qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in frame_ids:
            for packet in stream.encode(av.VideoFrame.from_ndarray(top_image(i, height, width), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        s = container.streams.video[0]
        return {"video.height": s.height, "video.width": s.width,
                "video.codec": s.codec_context.codec.canonical_name,  # "h264", as LeRobot's probe writes it
                "video.pix_fmt": s.pix_fmt, "video.fps": int(s.base_rate), "video.channels": 3, "has_audio": False,
                "is_depth_map": False}


def features(height: int, width: int, video_info: dict[str, Any], wrist: bool, fps: int | None = None) -> dict:
    scalar = {"shape": [1], "names": None}
    out = {TOP: {"dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                 "info": video_info}}
    if wrist:
        out[WRIST] = {"dtype": "image", "shape": [48, 48, 3], "names": ["height", "width", "channels"]}
    out.update({
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
        "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
        "timestamp": {"dtype": "float32", **scalar},
        **{k: {"dtype": "int64", **scalar} for k in ("frame_index", "episode_index", "index", "task_index")},
    })
    return out


def write_v30(root: Path, lengths: Sequence[int] = (5, 4, 6), fps: int = 10, height: int = 64, width: int = 96,
              video_files: Sequence[int] | None = None, missing_video_frames: int = 0, wrist: bool = True,
              version: str = "v3.0") -> dict[str, np.ndarray]:
    """A v3.0 dataset: all episodes in data/chunk-000/file-000.parquet; the top camera's episodes back to back in
    videos/<key>/chunk-000/file-<n>.mp4 with n = video_files[e] (default: all in file 0; a new file restarts at
    time 0, as LeRobot's size rollover does). `missing_video_frames` drops frames from the end of the last mp4.
    Returns the frame columns (global order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    columns = frame_columns(lengths, fps)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    path = root / V3_DATA.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, data_table(columns, slice(0, 1), fps, wrist).schema) as writer:
        for start, n in zip(starts, lengths):  # one row group per episode, as LeRobot writes
            writer.write_table(data_table(columns, slice(start, start + n), fps, wrist))

    video_files = list(video_files or [0] * len(lengths))
    video_info, from_ts = {}, []
    for file_index in sorted(set(video_files)):
        members = [e for e in range(len(lengths)) if video_files[e] == file_index]
        ids = [i for e in members for i in range(starts[e], starts[e] + lengths[e])]
        offset = 0
        for e in members:
            from_ts.append((e, offset / fps))
            offset += lengths[e]
        if file_index == max(video_files) and missing_video_frames:
            ids = ids[:-missing_video_frames]
        info = encode_video(root / V3_VIDEO.format(video_key=TOP, chunk_index=0, file_index=file_index), ids, fps,
                            height, width)
        video_info = video_info or info  # LeRobot probes chunk-000/file-000.mp4
    from_ts = [t for _, t in sorted(from_ts)]

    def ints(values: Any) -> Any:
        return pa.array([int(v) for v in values], pa.int64())

    count = len(lengths)
    episodes = pa.table({
        "episode_index": ints(range(count)),
        "tasks": pa.array([sorted({TASKS[t] for t in columns["task_index"][s:s + n]}) for s, n in zip(starts, lengths)],
                          pa.list_(pa.string())),
        "length": ints(lengths), "data/chunk_index": ints([0] * count), "data/file_index": ints([0] * count),
        "dataset_from_index": ints(starts), "dataset_to_index": ints(starts + np.asarray(lengths)),
        f"videos/{TOP}/chunk_index": ints([0] * count), f"videos/{TOP}/file_index": ints(video_files),
        f"videos/{TOP}/from_timestamp": pa.array(from_ts, pa.float64()),
        f"videos/{TOP}/to_timestamp": pa.array([t + n / fps for t, n in zip(from_ts, lengths)], pa.float64()),
        "meta/episodes/chunk_index": ints([0] * count), "meta/episodes/file_index": ints([0] * count),
        "stats/action/mean": pa.array([columns["action"][s:s + n].mean(0).tolist() for s, n in zip(starts, lengths)],
                                      pa.list_(pa.float64())),
    })
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(episodes, path)
    # tasks.parquet is a pandas frame indexed by the task string: the `pandas` metadata names `task` the index.
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}]}
    tasks = pa.table({"task_index": ints(range(len(TASKS))), "task": pa.array(list(TASKS), pa.string())})
    pq.write_table(tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}),
                   root / "meta/tasks.parquet")
    info = {"codebase_version": version, "robot_type": None, "total_episodes": count,
            "total_frames": int(sum(lengths)), "total_tasks": len(TASKS), "chunks_size": 1000,
            "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
            "splits": {"train": f"0:{count}"}, "data_path": V3_DATA, "video_path": V3_VIDEO,
            "features": features(height, width, video_info, wrist)}
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    return columns


def write_v21(root: Path, lengths: Sequence[int] = (4, 3, 5), fps: int = 10, height: int = 64,
              width: int = 96) -> dict[str, np.ndarray]:
    """A v2.1 dataset: one parquet and one mp4 (starting at time 0) per episode, jsonl metadata."""
    import pyarrow.parquet as pq

    root = Path(root)
    columns = frame_columns(lengths, fps, seed=1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    episodes, video_info = [], {}
    for e, (start, n) in enumerate(zip(starts, lengths)):
        where = {"episode_chunk": 0, "episode_index": e}
        path = root / V2_DATA.format(**where)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data_table(columns, slice(start, start + n), fps, wrist=False), path)
        info = encode_video(root / V2_VIDEO.format(video_key=TOP, **where), range(start, start + n), fps, height,
                            width)
        video_info = video_info or info
        tasks = sorted({TASKS[t] for t in columns["task_index"][start:start + n]})
        episodes.append({"episode_index": e, "tasks": tasks, "length": int(n)})
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (meta / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                              for i, t in enumerate(TASKS)))
    (meta / "episodes_stats.jsonl").write_text("".join(
        json.dumps({"episode_index": e, "stats": {"action": {"mean": columns["action"][s:s + n].mean(0).tolist(),
                                                             "count": [int(n)]}}}) + "\n"
        for e, (s, n) in enumerate(zip(starts, lengths))))
    info = {"codebase_version": "v2.1", "robot_type": None, "total_episodes": len(lengths),
            "total_frames": int(sum(lengths)), "total_tasks": len(TASKS), "total_videos": len(lengths),
            "total_chunks": 1, "chunks_size": 1000, "fps": fps, "splits": {"train": f"0:{len(lengths)}"},
            "data_path": V2_DATA, "video_path": V2_VIDEO, "features": features(height, width, video_info, False)}
    (meta / "info.json").write_text(json.dumps(info, indent=2))
    return columns


# ----- LeRobot's invariants -------------------------------------------------------------------------------------
def check_layout(root: Path) -> None:
    """Assert what LeRobot's v3.0 reader relies on (lerobot_format.md section 7) for a `write_v30` dataset."""
    import av
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    info = json.loads((root / "meta/info.json").read_text())
    fps = info["fps"]
    data = pa.concat_tables(pq.read_table(p) for p in sorted((root / "data").glob("*/*.parquet")))
    data_columns = set(data.column_names)
    declared = {k for k, f in info["features"].items() if f["dtype"] != "video"}
    assert data_columns == declared, "parquet columns must be exactly the non-video features"
    assert len(data) == info["total_frames"]
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(len(data)))  # contiguous global index
    np.testing.assert_allclose(data["timestamp"].to_numpy(), data["frame_index"].to_numpy() / fps, atol=1e-6)
    episodes = pq.read_table(sorted((root / "meta/episodes").glob("*/*.parquet"))[0]).to_pylist()
    assert [e["episode_index"] for e in episodes] == list(range(info["total_episodes"]))  # positional rows
    episode_of, frame_of = data["episode_index"].to_numpy(), data["frame_index"].to_numpy()
    for i, ep in enumerate(episodes):
        lo, hi = ep["dataset_from_index"], ep["dataset_to_index"]
        assert hi - lo == ep["length"] and (i == 0 or lo == episodes[i - 1]["dataset_to_index"])
        assert (episode_of[lo:hi] == i).all() and (frame_of[lo:hi] == np.arange(ep["length"])).all()
        key = f"videos/{TOP}"
        assert abs(ep[f"{key}/to_timestamp"] - ep[f"{key}/from_timestamp"] - ep["length"] / fps) < 1e-9
    tasks = pd.read_parquet(root / "meta/tasks.parquet")  # LeRobot: tasks.iloc[task_index].name is the string
    assert [tasks.iloc[i].name for i in range(len(TASKS))] == list(TASKS)
    assert set(data["task_index"].to_pylist()) <= set(range(info["total_tasks"]))
    for file_index in sorted({e[f"videos/{TOP}/file_index"] for e in episodes}):
        members = [e for e in episodes if e[f"videos/{TOP}/file_index"] == file_index]
        with av.open(str(root / V3_VIDEO.format(video_key=TOP, chunk_index=0, file_index=file_index))) as c:
            s = c.streams.video[0]
            times = [float(f.pts * s.time_base) for f in c.decode(s)]
        # frame k of the file sits exactly at k / fps, within LeRobot's 1e-4 s tolerance
        np.testing.assert_allclose(times, np.arange(len(times)) / fps, atol=1e-4)
        assert members[0][f"videos/{TOP}/from_timestamp"] == 0.0
        if len(times) >= round(max(e[f"videos/{TOP}/to_timestamp"] for e in members) * fps):
            continue
        raise AssertionError(f"mp4 file {file_index} is shorter than its episodes")
