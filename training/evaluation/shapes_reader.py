"""Read a shapes scene back from pixels, GenEval-style, and score it against the prompt's scene description.

Pixels are assigned to the nearest palette colour (or to the background when far from every colour); each
connected component of one colour is an object. Its shape is the candidate whose rendering, fitted to the
component's bounding box with the dataset's own renderer, overlaps the component best (IoU). Nothing is learned, so
the reader cannot share a generator's mistakes; `tests/test_evaluation.py` checks it reads real scenes correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from unimask.training.data.writers.shapes import BACKGROUND, PALETTE, render_scene

_REFERENCE = 256  # canvas for measuring each shape's extent relative to its radius


@dataclass
class DetectedObject:
    color: str
    shape: str
    x: float  # centroid, pixels
    y: float
    area: int  # pixels
    fit: float  # IoU of the best shape fit


@lru_cache(maxsize=None)
def _extents(shape: str) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of a shape's pixels relative to its centre, in units of its radius."""
    r = 100.0
    scene = {"objects": [{"shape": shape, "color": "white", "x": 128.0, "y": 128.0, "size": 2 * r}]}
    mask = render_scene(scene, _REFERENCE, background=(0, 0, 0)).max(axis=2) > 127
    ys, xs = np.nonzero(mask)
    return ((xs.min() - 128) / r, (xs.max() + 1 - 128) / r, (ys.min() - 128) / r, (ys.max() + 1 - 128) / r)


def _fit_shape(mask: np.ndarray, shape: str) -> float:
    """IoU between a component mask and `shape` rendered to fill the same bounding box."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    left, right, top, bottom = _extents(shape)
    r = 0.5 * ((x1 - x0) / (right - left) + (y1 - y0) / (bottom - top))
    cx, cy = x0 - left * r, y0 - top * r
    size = mask.shape[0]
    scene = {"objects": [{"shape": shape, "color": "white", "x": float(cx), "y": float(cy), "size": float(2 * r)}]}
    rendered = render_scene(scene, size, background=(0, 0, 0)).max(axis=2) > 127
    union = np.logical_or(rendered, mask).sum()
    return float(np.logical_and(rendered, mask).sum() / union) if union else 0.0


def read_scene(image: np.ndarray, colors: Sequence[str], shapes: Sequence[str], min_area: int = 8,
               max_color_distance: float = 90.0) -> list[DetectedObject]:
    """Objects in a uint8 [H, W, 3] image rendered (or generated) in the shapes style."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` must be [H, W, 3], got shape {image.shape}.")
    palette = np.array([PALETTE[c] for c in colors] + [BACKGROUND], dtype=np.float32)  # (C+1, 3)
    distance = np.linalg.norm(image[:, :, None, :].astype(np.float32) - palette, axis=-1)  # (H, W, C+1)
    nearest = distance.argmin(axis=-1)
    nearest[distance.min(axis=-1) > max_color_distance] = len(colors)
    found = []
    for index, color in enumerate(colors):
        labels, count = ndimage.label(nearest == index, structure=np.ones((3, 3)))
        for component in range(1, count + 1):
            mask = labels == component
            area = int(mask.sum())
            if area < min_area:
                continue
            fits = {shape: _fit_shape(mask, shape) for shape in shapes}
            best = max(fits, key=fits.get)
            ys, xs = np.nonzero(mask)
            found.append(DetectedObject(color, best, float(xs.mean()), float(ys.mean()), area, fits[best]))
    return found


def _position_ok(objects: list[DetectedObject], position: str | None, size: int) -> bool:
    half = size / 2
    tests = {"left": lambda o: o.x < half, "right": lambda o: o.x >= half, "top": lambda o: o.y < half,
             "bottom": lambda o: o.y >= half}
    return position is None or all(tests[position](o) for o in objects)


def _relation_ok(a: list[DetectedObject], b: list[DetectedObject], relation: str) -> bool:
    if not a or not b:
        return False
    if relation == "left of":
        return max(o.x for o in a) < min(o.x for o in b)
    if relation == "right of":
        return min(o.x for o in a) > max(o.x for o in b)
    if relation == "above":
        return max(o.y for o in a) < min(o.y for o in b)
    if relation == "below":
        return min(o.y for o in a) > max(o.y for o in b)
    raise ValueError(f"unknown relation {relation!r}.")


def score_scene(objects: list[DetectedObject], scene: dict[str, Any]) -> dict[str, bool]:
    """Which attributes of the prompted `scene` (the shapes dataset's json) the detected objects satisfy.

    color: every prompted colour is present; shape: every prompted (colour, shape) pair is present;
    count: each pair appears exactly the prompted number of times; position: the single group's position or the
    two groups' relation holds; all: all of these and no extra objects.
    """
    size = int(scene.get("image_size", 64))
    groups = scene["groups"]
    members = [[o for o in objects if o.color == g["color"] and o.shape == g["shape"]] for g in groups]
    color = all(any(o.color == g["color"] for o in objects) for g in groups)
    shape = all(members)
    count = all(len(m) == g["count"] for m, g in zip(members, groups))
    if len(groups) == 1:
        position = bool(members[0]) and _position_ok(members[0], groups[0].get("position"), size)
    else:
        position = _relation_ok(members[0], members[1], scene["relation"])
    extra = len(objects) != sum(len(m) for m in members)
    return {"color": color, "shape": shape, "count": count, "position": position,
            "all": color and shape and count and position and not extra}
