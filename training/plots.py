"""Every chart unimask draws, for the quickstart report and the demo alike: matplotlib figures returned as PIL images.
A public module (`__all__`): scripts and demos draw with the same functions.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never through pyplot: pyplot keeps a global
registry of open figures, which leaks memory in a long-running server and is not safe from its worker threads.
Sizes are given in pixels, as the callers paste and save images.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from PIL import Image

try:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # matplotlib comes with the extras that draw, not with the core install
    raise ImportError("unimask's charts need matplotlib: pip install 'unimask[eval]' (or 'unimask[demo]').") from error

__all__ = ["action_chunk_plot", "action_comparison_figure", "action_comparison_plot", "captioned_grid", "frame_strip",
           "loss_plot", "sample_grid"]

DPI = 100  # at 100 dots per inch a figure of w x h pixels is w/100 x h/100 inches


def action_chunk_plot(chunk: np.ndarray, names: Sequence[str], title: str,
                      size: tuple[int, int] = (560, 280)) -> Image.Image:
    """A line chart of an action chunk [H, D] in real units: one line per dimension over the steps of the chunk."""
    chunk = _action_array(chunk, "chunk", names)
    figure = _figure(size)
    axes = figure.add_subplot()
    for d, name in enumerate(names):
        axes.plot(np.arange(len(chunk)), chunk[:, d], marker="o", label=name)
    _label_chunk_axes(axes, len(chunk), ylabel="action (real units)")
    axes.set_title(_fit_title(title, size[0] * 0.75))  # the legend takes the right quarter
    # Outside the axes: a legend inside would hide the points of a short chunk.
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _image(figure)


def action_comparison_figure(expert: np.ndarray, predicted: np.ndarray, names: Sequence[str], title: str,
                             panel_size: tuple[int, int] = (480, 150)) -> Figure:
    """Expert vs predicted action chunks [H, D], one panel (of `panel_size` pixels) per dimension, stacked.

    Each panel has its own y scale: dimensions differ in range (a gripper effort of +-1 next to small
    displacements), and one shared axis would flatten the small ones into a line at zero.
    """
    expert = _action_array(expert, "expert", names)
    predicted = _action_array(predicted, "predicted", names)
    if expert.shape != predicted.shape:
        raise ValueError(f"`expert` has shape {expert.shape} but `predicted` has shape {predicted.shape}; "
                         "compare chunks of the same horizon and dimensions.")
    figure = _figure((panel_size[0], panel_size[1] * len(names)))
    panels = figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    steps = np.arange(len(expert))
    for d, (axes, name) in enumerate(zip(panels, names)):
        axes.plot(steps, expert[:, d], marker="o", label="expert")
        axes.plot(steps, predicted[:, d], marker="o", label="model")
        _label_chunk_axes(axes, len(expert), ylabel=f"{name}\n(real units)")
        axes.label_outer()  # the shared x axis is labelled once, under the last panel
    panels[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    figure.suptitle(_fit_title(title, panel_size[0]))
    return figure


def action_comparison_plot(expert: np.ndarray, predicted: np.ndarray, names: Sequence[str], title: str,
                           panel_size: tuple[int, int] = (480, 150)) -> Image.Image:
    """`action_comparison_figure` as an image of `panel_size[0]` x `panel_size[1] * D` pixels."""
    return _image(action_comparison_figure(expert, predicted, names, title, panel_size))


def loss_plot(series: dict[str, Sequence[float]], title: str, steps: Sequence[float],
              size: tuple[int, int] = (560, 300)) -> Image.Image:
    """Training loss curves against the optimizer step, one line per series; NaN marks a step a series was not logged.

    The y axis is logarithmic when the losses span more than a decade, so the late, small improvements stay visible
    next to the large early drop.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if not series:
        raise ValueError("`series` is empty; give at least one loss curve.")
    curves = {name: np.asarray(values, dtype=np.float64) for name, values in series.items()}
    for name, values in curves.items():
        if values.shape != steps.shape:
            raise ValueError(f"loss series {name!r} has shape {values.shape} but `steps` has shape {steps.shape}; "
                             "give one value per logged step.")
    figure = _figure(size)
    axes = figure.add_subplot()
    for name, values in curves.items():
        logged = np.isfinite(values)  # connect the logged points across the steps a series skipped
        axes.plot(steps[logged], values[logged], label=name)
    log_scale = _spans_decades(np.concatenate(list(curves.values())))
    if log_scale:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # no tick at step 2.5 on a short run
    axes.set(xlabel="optimizer step", ylabel="loss (log scale)" if log_scale else "loss", title=title)
    # Losses fall, so the upper right is clear of the curves (and "best" would scan every point of a long run).
    axes.legend(loc="upper right", fontsize="small")
    return _image(figure)


def frame_strip(frames: Sequence[np.ndarray], max_frames: int = 10, scale: int = 1) -> np.ndarray:
    """Up to `max_frames` frames evenly spaced over the sequence (first and last included), side by side.

    `scale` repeats every pixel that many times in both directions, so 64-pixel frames stay legible in a report.
    """
    if not frames:
        raise ValueError("`frames` is empty; record frames with rollout(..., record_frames=True).")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    strip = np.concatenate([np.asarray(frames[i]) for i in picks], axis=1)
    return strip.repeat(scale, axis=0).repeat(scale, axis=1)


def sample_grid(images: Sequence[np.ndarray | None], texts: Sequence[str], chunks: Sequence[np.ndarray | None] = (),
                valid_steps: Sequence[int | None] = (), columns: int = 4, cell: int = 180) -> Image.Image:
    """A grid of dataset samples: each image with its text as title and, for robot samples, its action chunk [H, D]
    below (steps past `valid_steps` are padding: drawn dashed)."""
    if not len(images) or len(images) != len(texts):
        raise ValueError(f"give one text per image and at least one image, got {len(images)} images and "
                         f"{len(texts)} texts.")
    robot = any(chunk is not None for chunk in chunks)
    rows = -(-len(images) // columns)
    per_row = 2 if robot else 1
    figure = _figure((columns * cell, rows * int(cell * (1.55 if robot else 1.15))))
    grid = figure.add_gridspec(rows * per_row, columns, height_ratios=[3, 1.4] * rows if robot else None)
    for i, (image, text) in enumerate(zip(images, texts)):
        row, column = divmod(i, columns)
        axes = figure.add_subplot(grid[row * per_row, column])
        if image is not None:
            axes.imshow(image, interpolation="nearest")
        axes.set_axis_off()
        axes.set_title(textwrap.fill(text, 28), fontsize=7)
        chunk = chunks[i] if i < len(chunks) else None
        if chunk is None:
            continue
        plot = figure.add_subplot(grid[row * per_row + 1, column])
        valid = valid_steps[i] if i < len(valid_steps) and valid_steps[i] else len(chunk)
        for d in range(chunk.shape[1]):
            line, = plot.plot(np.arange(valid), chunk[:valid, d], linewidth=1)
            plot.plot(np.arange(valid - 1, len(chunk)), chunk[valid - 1:, d], linestyle="--", linewidth=0.8,
                      color=line.get_color())
        plot.set_xlabel("step", fontsize=6)
        plot.set_ylabel("action", fontsize=6)
        plot.tick_params(labelsize=5)
    return _image(figure)


def captioned_grid(images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8, cell: int = 128,
                   font_size: float = 8.0) -> Image.Image:
    """Pictures in a grid, each with its caption beneath: generated images under their prompts, or held-out
    pictures over the captions written for them. Images (uint8 [H, W, 3]) are scaled to `cell` pixels wide with
    nearest-neighbour sampling, so every generated pixel stays visible; captions wrap to the cell's width."""
    if not len(images) or len(images) != len(captions):
        raise ValueError(f"give one caption per image and at least one image, got {len(images)} images and "
                         f"{len(captions)} captions.")
    if columns < 1 or cell < 16:
        raise ValueError(f"`columns` must be >= 1 and `cell` >= 16 pixels, got {columns} and {cell}.")
    columns = min(columns, len(images))
    pictures = [Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB") for image in images]
    pictures = [p.resize((cell, max(1, round(p.height * cell / p.width))), Image.NEAREST) for p in pictures]
    text_px = font_size * DPI / 72
    wrapped = [textwrap.fill(caption, max(8, int(cell / (0.6 * text_px)))) for caption in captions]
    gap, picture_height = 8, max(p.height for p in pictures)
    text_height = int(np.ceil(max(w.count("\n") + 1 for w in wrapped) * 1.3 * text_px)) + gap
    rows = -(-len(pictures) // columns)
    row_height = picture_height + text_height + gap
    canvas = np.full((rows * row_height + gap, columns * (cell + gap) + gap, 3), 255, np.uint8)  # (H, W, 3)
    figure = Figure(figsize=(canvas.shape[1] / DPI, canvas.shape[0] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))  # one axes over the whole figure: data coordinates are pixels
    for i, (picture, text) in enumerate(zip(pictures, wrapped)):
        row, column = divmod(i, columns)
        top, left = gap + row * row_height, gap + column * (cell + gap)
        canvas[top:top + picture.height, left:left + cell] = np.asarray(picture)
        axes.text(left + cell / 2, top + picture_height + gap / 2, text, ha="center", va="top", fontsize=font_size)
    axes.imshow(canvas, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    return _image(figure)


def _fit_title(title: str, width_px: float, font_pt: float = 12.0) -> str:
    """`title` wrapped onto lines that fit `width_px` at matplotlib's default title size: a long instruction would
    otherwise run past both edges of the figure and be cut."""
    return textwrap.fill(title, max(12, int(width_px / (0.6 * font_pt * DPI / 72))))


def _action_array(values: np.ndarray, label: str, names: Sequence[str]) -> np.ndarray:
    """`values` as a float array [H, D] with one name per dimension, or a ValueError naming the shape."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"`{label}` must be an array [H, D] with H >= 1, got shape {array.shape}.")
    if len(names) != array.shape[1]:
        raise ValueError(f"got {len(names)} dimension names for {array.shape[1]} action dimensions.")
    return array


def _label_chunk_axes(axes: Axes, horizon: int, ylabel: str) -> None:
    """Axes over the steps of a chunk: one tick per step and a zero line, since the sign of a displacement matters."""
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.set_xticks(np.arange(horizon))
    axes.set(xlabel="step in chunk", ylabel=ylabel)


def _spans_decades(values: np.ndarray) -> bool:
    """Whether the finite values are all positive and their largest is more than ten times their smallest."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() > 10 * finite.min()


def _figure(size: tuple[int, int]) -> Figure:
    """An empty figure of `size` pixels with its own Agg canvas; constrained layout keeps labels inside it."""
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _image(figure: Figure) -> Image.Image:
    """The figure rendered to an RGB image."""
    figure.canvas.draw()
    return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
