"""Pictures for the demo: an action-chunk chart and a frame strip.

The chart uses matplotlib when it is installed (it is not a unimask dependency) and otherwise a plain PIL drawing,
so the demo works with the core install.
"""

from __future__ import annotations

import importlib.util
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


def action_chunk_plot(chunk: np.ndarray, names: Sequence[str], title: str, size: tuple[int, int] = (560, 280),
                      use_matplotlib: bool | None = None) -> Image.Image:
    """A line chart of an action chunk [H, D] (one line per dimension, x = step in the chunk).

    `use_matplotlib=None` picks matplotlib when it can be imported; True requires it; False forces the PIL drawing.
    """
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2 or len(chunk) == 0:
        raise ValueError(f"`chunk` must be an array [H, D] with H >= 1, got shape {chunk.shape}.")
    if len(names) != chunk.shape[1]:
        raise ValueError(f"got {len(names)} dimension names for {chunk.shape[1]} action dimensions.")
    if use_matplotlib is None:
        use_matplotlib = importlib.util.find_spec("matplotlib") is not None
    draw = _matplotlib_plot if use_matplotlib else _pil_plot
    return draw(chunk, list(names), title, size)


def _matplotlib_plot(chunk: np.ndarray, names: list[str], title: str, size: tuple[int, int]) -> Image.Image:
    # Figure + Agg canvas instead of pyplot: no global figure registry, safe from the server's worker threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = np.arange(len(chunk))
    for d, name in enumerate(names):
        axes.plot(steps, chunk[:, d], marker="o", color=np.array(COLORS[d % len(COLORS)]) / 255, label=name)
    axes.axhline(0, color="0.6", linewidth=0.8)
    axes.set_xticks(steps)
    axes.set(xlabel="step in chunk", ylabel="action (real units)", title=title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.tight_layout()
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def _pil_plot(chunk: np.ndarray, names: list[str], title: str, size: tuple[int, int]) -> Image.Image:
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 52, 24, width - 90, height - 28
    finite = chunk[np.isfinite(chunk)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # keep the zero line in view: sign matters for a displacement
    pad = 0.05 * (hi - lo) or 1.0
    lo, hi = lo - pad, hi + pad
    x_of = lambda t: left + (right - left) * (t + 0.5) / len(chunk)  # noqa: E731
    y_of = lambda v: bottom - (bottom - top) * (v - lo) / (hi - lo)  # noqa: E731
    draw.rectangle([left, top, right, bottom], outline=(150, 150, 150))
    draw.line([(left, y_of(0.0)), (right, y_of(0.0))], fill=(200, 200, 200))
    draw.text((left, 6), title, fill="black")
    for value in (hi, 0.0, lo):
        draw.text((4, y_of(value) - 5), f"{value:+.2f}", fill="black")
    for t in range(len(chunk)):
        draw.text((x_of(t) - 3, bottom + 4), str(t), fill="black")
    draw.text(((left + right) // 2 - 36, height - 12), "step in chunk", fill="black")
    for d, name in enumerate(names):
        color = COLORS[d % len(COLORS)]
        points = [(x_of(t), y_of(v)) for t, v in enumerate(chunk[:, d]) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((right + 8, top + 14 * d), name, fill=color)
    return image


def frame_strip(frames: Sequence[np.ndarray], max_frames: int = 10) -> np.ndarray:
    """Up to `max_frames` frames evenly spaced over the episode (first and last included), side by side."""
    if not frames:
        raise ValueError("`frames` is empty; record frames with rollout(..., record_frames=True).")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    return np.concatenate([np.asarray(frames[i]) for i in picks], axis=1)
