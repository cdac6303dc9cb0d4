"""`unimask data inspect DIR`: print a dataset's card and counts, and draw a PNG grid of samples.

Each grid cell shows the image, its caption or instruction, and for robot samples a small plot of the action chunk
(one line per action dimension over the H steps; padded steps after `valid_steps` dashed), drawn by
`unimask.training.plots.sample_grid`.
"""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from unimask.atomic import atomic_write

from .format import SkipCounter, read_card
from .loader import iterate_samples

def _breakdown(meta: dict[str, Any]) -> str | None:
    for field in ("task_name", "label"):
        if field in meta:
            return f"{field}={meta[field]}"
    if "groups" in meta:
        return f"objects={len(meta.get('objects', []))}"
    return None


def inspect_dataset(directory: str | Path, split: str = "train", samples: int = 16, png: str | Path | None = None,
                    count: bool = True, seed: int = 0) -> dict[str, Any]:
    """Print the card summary and counts; write the grid PNG. Returns {"counts", "breakdown", "png"}."""
    directory = Path(directory)
    card = read_card(directory)
    print(f"dataset {directory}  (source: {card.get('source')}, format {card.get('format')})")
    for name in ("description", "image_size", "tasks", "task_names", "action_dim", "state_dim", "horizon",
                 "holdout_combinations", "command"):
        if card.get(name) not in (None, [], ""):
            print(f"  {name}: {card[name] if not isinstance(card[name], list) else ', '.join(map(str, card[name]))}")
    print(f"  disk: {card['bytes'] / 1e6:.1f} MB, written in {card['seconds']:.1f} s")
    for name, info in card["splits"].items():
        tasks = ", ".join(f"{t} {info['count']}" for t in card.get("tasks", []))
        print(f"  {name}: {info['count']} samples in {len(info['shards'])} shards (sequences per task: {tasks})")
    if card.get("stats"):
        print(f"  stats: {json.dumps(card['stats'])[:400]}")

    rng = np.random.default_rng(seed)
    picked: list[dict[str, Any]] = []
    breakdown: collections.Counter = collections.Counter()
    seen = 0
    task = "vla" if "vla" in card.get("tasks", []) else ("i2t" if "i2t" in card.get("tasks", []) else "lm")
    counter = SkipCounter()
    for sample in iterate_samples(directory, split, task=task, counter=counter):
        seen += 1
        key = _breakdown(sample["meta"])
        if key:
            breakdown[key] += 1
        if len(picked) < samples:  # reservoir sampling: a uniform pick without knowing the count in advance
            picked.append(sample)
        else:
            j = int(rng.integers(seen))
            if j < samples:
                picked[j] = sample
        if not count and seen >= 50 * samples:
            break
    expected = card["splits"][split]["count"]
    if count:
        print(f"  read back {seen} of {expected} {split} samples")
        if seen < expected:
            skipped = {k: v for k, v in counter.counts().items() if v}
            print(f"  WARNING: {expected - seen} {split} samples could not be read ({skipped}; 'shards' counts failed "
                  "shard reads); see the log above for which.")
    if breakdown:
        scope = "" if count else f" (first {seen} samples only)"
        print(f"  breakdown{scope}: " + ", ".join(f"{k}: {v}" for k, v in sorted(breakdown.items())))
    png = Path(png) if png else directory / f"inspect-{split}.png"
    from unimask.training.plots import sample_grid

    buffer = io.BytesIO()
    sample_grid([s.get("image") for s in picked], [s["text"].stored if "text" in s else "" for s in picked],
                [s.get("action") for s in picked], [s["meta"].get("valid_steps") for s in picked]
                ).save(buffer, format="PNG")
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    print(f"  grid of {len(picked)} samples: {png}")
    return {"counts": {"read": seen, "expected": expected, "skipped": counter.counts()}, "breakdown": dict(breakdown),
            "png": str(png)}
