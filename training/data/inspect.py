"""`unimask data inspect DIR`: print a dataset's card and counts, and draw a PNG grid of samples.

Each grid cell shows the image (upscaled 2x, nearest), its caption or instruction, and for robot samples a small
plot of the action chunk (one coloured line per action dimension over the H steps, the [-1, 1] band shaded, padded
steps after `valid_steps` drawn dashed-grey). Drawn with PIL only (no matplotlib needed).
"""

from __future__ import annotations

import collections
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from unimask.atomic import atomic_write

from .loader import iterate_samples
from .format import read_card

_COLOURS = [(220, 50, 50), (40, 160, 60), (50, 90, 230), (230, 150, 20), (150, 60, 200), (30, 180, 190)]


def _font(size: int = 11) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def plot_actions(actions: np.ndarray, valid_steps: int | None, width: int, height: int) -> Image.Image:
    """A small line plot of an action chunk [H, D] on a fixed [-1.1, 1.1] axis."""
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    steps, dims = actions.shape
    lo, hi = -1.1, 1.1

    def y(v: float) -> float:
        return (hi - float(np.clip(v, lo, hi))) / (hi - lo) * (height - 1)

    draw.rectangle([0, y(1.0), width - 1, y(-1.0)], fill=(242, 242, 242))
    draw.line([0, y(0.0), width - 1, y(0.0)], fill=(200, 200, 200))
    xs = [i * (width - 1) / max(1, steps - 1) for i in range(steps)]
    valid = steps if valid_steps is None else max(1, min(valid_steps, steps))
    for d in range(dims):
        colour = _COLOURS[d % len(_COLOURS)]
        points = [(xs[i], y(actions[i, d])) for i in range(steps)]
        if valid > 1:
            draw.line(points[:valid], fill=colour, width=2)
        if valid < steps:
            draw.line(points[valid - 1:], fill=(170, 170, 170), width=1)
        for point in points[:valid]:
            draw.ellipse([point[0] - 1.5, point[1] - 1.5, point[0] + 1.5, point[1] + 1.5], fill=colour)
    return canvas


def sample_grid(samples: list[dict[str, Any]], columns: int = 4, cell: int = 128) -> Image.Image:
    """Grid of decoded samples (see `unimask.training.data.decode_sample`) with text and action plots."""
    if not samples:
        raise ValueError("`samples` is empty; nothing to draw.")
    font = _font()
    text_h, plot_h = 44, 56 if any(s["actions"] is not None for s in samples) else 0
    rows = -(-len(samples) // columns)
    width, height = cell + 8, cell + text_h + plot_h + 8
    grid = Image.new("RGB", (columns * width, rows * height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, sample in enumerate(samples):
        x, y = (i % columns) * width + 4, (i // columns) * height + 4
        if sample["image"] is not None:
            grid.paste(Image.fromarray(sample["image"]).resize((cell, cell), Image.NEAREST), (x, y))
        text = "\n".join(textwrap.wrap(sample["text"] or "", width=22)[:3])
        draw.multiline_text((x, y + cell + 2), text, fill=(0, 0, 0), font=font, spacing=1)
        if sample["actions"] is not None:
            grid.paste(plot_actions(sample["actions"], sample["valid_steps"], cell, plot_h - 4),
                       (x, y + cell + text_h))
    return grid


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
    for sample in iterate_samples(directory, split, task=task):
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
    if count:
        print(f"  read back {seen} {split} samples")
    if breakdown:
        scope = "" if count else f" (first {seen} samples only)"
        print(f"  breakdown{scope}: " + ", ".join(f"{k}: {v}" for k, v in sorted(breakdown.items())))
    png = Path(png) if png else directory / f"inspect-{split}.png"
    buffer = io.BytesIO()
    sample_grid(picked).save(buffer, format="PNG")
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    print(f"  grid of {len(picked)} samples: {png}")
    return {"counts": {"read": seen}, "breakdown": dict(breakdown), "png": str(png)}
