"""An independent reader of written shards for the writer tests: the card's shard list, then webdataset and numpy /
PIL decoding, without the package's loader."""

from __future__ import annotations

import json
from pathlib import Path

from unimask.modality import decode_image, decode_npy
from unimask.training.data.format import read_card


def shard_paths(directory: str | Path, split: str) -> list[str]:
    directory = Path(directory)
    return [str(directory / rel) for rel in read_card(directory)["splits"][split]["shards"]]


def read_split(directory: str | Path, split: str) -> list[dict]:
    """Every sample of a split, in order: key, meta, and image / text / actions / state when present."""
    import webdataset as wds

    out = []
    for raw in wds.WebDataset(shard_paths(directory, split), shardshuffle=False, empty_check=False):
        sample = {"key": raw["__key__"], "meta": json.loads(raw["json"])}
        if "png" in raw:
            sample["image"] = decode_image(raw["png"])
        if "txt" in raw:
            sample["text"] = raw["txt"].decode("utf-8")
        for name in ("actions", "state"):
            if f"{name}.npy" in raw:
                sample[name] = decode_npy(raw[f"{name}.npy"])
        out.append(sample)
    return out
