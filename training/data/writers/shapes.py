"""The `shapes` dataset: procedural scenes with compositional captions (colour, shape, count, position).

A scene (default 64x64 RGB, dark background) holds 1 to `max_objects` objects arranged as one or two groups; all
objects of a group share colour and shape:

- one group: "two red circles on the left", "a blue square", "three yellow triangles at the top";
- two groups in a relation: "two red circles left of a blue square", "a green triangle above a yellow circle".

For "A left of B" every object of A lies left of every object of B with a gap (likewise for right of / above /
below), so the relation is unambiguous from the pixels. `json` carries the exact scene: groups (colour, shape,
count, position), relation, every object's centre and size in pixels, and all caption paraphrases; `txt` holds one
paraphrase. Shapes are drawn at 4x resolution and downsampled with a box filter (anti-aliased edges).

`holdout_combinations` (e.g. `["red circle", "blue square"]`) keeps every scene containing one of those
colour-shape pairs out of train; the test split is sampled from all combinations and the card counts how many test
scenes contain a held-out pair (for compositional generalisation tests). Train scenes whose pixels equal a test
scene's are rejected, so the splits never share content.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..format import DataError, DatasetWriter, content_hash, make_sample

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon")
DEFAULT_SHAPES = ("circle", "square", "triangle")
DEFAULT_COLORS = ("red", "green", "blue", "yellow")
BACKGROUND = (20, 20, 20)
RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
POSITIONS = {
    "left": ("on the left", "in the left half"),
    "right": ("on the right", "in the right half"),
    "top": ("at the top", "in the top half"),
    "bottom": ("at the bottom", "in the bottom half"),
    None: (),
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five"}
_SUPERSAMPLE = 4


def plural(shape: str, count: int) -> str:
    if count == 1:
        return shape
    return shape + ("es" if shape.endswith(("s", "x", "ss")) else "s")


def group_phrase(group: dict[str, Any], one: str = "a") -> str:
    count = group["count"]
    word = one if count == 1 else COUNT_WORDS[count]
    if word == "a" and group["color"][0] in "aeiou":
        word = "an"
    return f"{word} {group['color']} {plural(group['shape'], count)}"


def scene_captions(scene: dict[str, Any]) -> list[str]:
    """All paraphrases of a scene; the first is the canonical caption."""
    groups = scene["groups"]
    if len(groups) == 1:
        g = groups[0]
        phrases = POSITIONS[g["position"]]
        if not phrases:
            return [group_phrase(g), group_phrase(g, one="one")]
        return [f"{group_phrase(g)} {phrases[0]}", f"{group_phrase(g)} {phrases[1]}",
                f"{group_phrase(g, one='one')} {phrases[0]}"]
    a, b = groups
    rel = scene["relation"]
    captions = [f"{group_phrase(a)} {rel} {group_phrase(b)}", f"{group_phrase(b)} {RELATIONS[rel]} {group_phrase(a)}"]
    if rel in ("left of", "right of"):
        side = rel.split()[0]
        captions.append(f"{group_phrase(a)} to the {side} of {group_phrase(b)}")
    else:
        captions.append(f"{group_phrase(a, one='one')} {rel} {group_phrase(b, one='one')}")
    return captions


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        angles = [phase + 2 * math.pi * k / n for k in range(n)]
        return [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]

    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)]
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, 0.45 * r, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    return None


def render_scene(scene: dict[str, Any], image_size: int, background: Sequence[int] = BACKGROUND) -> np.ndarray:
    """uint8 [S, S, 3] image of a scene (object coordinates are in output pixels)."""
    big = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), tuple(background))
    draw = ImageDraw.Draw(canvas)
    for obj in scene["objects"]:
        cx, cy, r = (v * _SUPERSAMPLE for v in (obj["x"], obj["y"], obj["size"] / 2))
        color = PALETTE[obj["color"]]
        shape = obj["shape"]
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif shape == "square":
            h = 0.85 * r
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=color)
        elif shape == "cross":
            w = 0.33 * r
            draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
            draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)
        else:
            draw.polygon(_polygon(shape, cx, cy, r), fill=color)
    return np.asarray(canvas.resize((image_size, image_size), Image.BOX))


def _region(name: str | None, size: int, split: float) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) box that object centres must fall in."""
    gap = 0.06 * size
    full = (0.0, float(size), 0.0, float(size))
    if name in (None, "anywhere"):
        return full
    if name in ("left", "A:left of", "B:right of"):
        return (0.0, split - gap, 0.0, float(size))
    if name in ("right", "A:right of", "B:left of"):
        return (split + gap, float(size), 0.0, float(size))
    if name in ("top", "A:above", "B:below"):
        return (0.0, float(size), 0.0, split - gap)
    return (0.0, float(size), split + gap, float(size))  # bottom, A:below, B:above


def _place(rng: np.random.Generator, region: tuple[float, float, float, float], size: float, image_size: int,
           placed: list[dict[str, Any]], tries: int = 60) -> tuple[float, float] | None:
    r = size / 2
    x0, x1, y0, y1 = region
    lo_x, hi_x = max(x0, r + 1), min(x1, image_size - r - 1)
    lo_y, hi_y = max(y0, r + 1), min(y1, image_size - r - 1)
    if lo_x > hi_x or lo_y > hi_y:
        return None
    for _ in range(tries):
        x, y = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        if all(math.hypot(x - o["x"], y - o["y"]) > r + o["size"] / 2 + 1.5 for o in placed):
            return round(x, 2), round(y, 2)
    return None


def sample_scene(rng: np.random.Generator, shapes: Sequence[str], colors: Sequence[str], image_size: int = 64,
                 max_objects: int = 3) -> dict[str, Any]:
    """A random scene description (no pixels): groups, relation and object placements."""
    min_size, max_size = 0.19 * image_size, 0.28 * image_size
    while True:
        two_groups = max_objects >= 2 and rng.random() < 0.5
        if two_groups:
            first = int(rng.integers(1, max_objects))
            second = int(rng.integers(1, max_objects - first + 1))
            combos = [(c, s) for c in colors for s in shapes]
            i, j = rng.choice(len(combos), size=2, replace=False)
            groups = [{"color": combos[i][0], "shape": combos[i][1], "count": first},
                      {"color": combos[j][0], "shape": combos[j][1], "count": second}]
            relation = str(rng.choice(list(RELATIONS)))
            split = image_size * rng.uniform(0.4, 0.6)
            regions = [_region(f"A:{relation}", image_size, split), _region(f"B:{relation}", image_size, split)]
        else:
            color, shape = str(rng.choice(list(colors))), str(rng.choice(list(shapes)))
            position = [None, "left", "right", "top", "bottom"][int(rng.integers(5))]
            groups = [{"color": color, "shape": shape, "count": int(rng.integers(1, max_objects + 1)),
                       "position": position}]
            relation = None
            regions = [_region(position, image_size, image_size / 2)]
        objects: list[dict[str, Any]] = []
        ok = True
        for index, (group, region) in enumerate(zip(groups, regions)):
            for _ in range(group["count"]):
                size = round(float(rng.uniform(min_size, max_size)), 2)
                where = _place(rng, region, size, image_size, objects)
                if where is None:
                    ok = False
                    break
                objects.append({"shape": group["shape"], "color": group["color"], "x": where[0], "y": where[1],
                                "size": size, "group": index})
            if not ok:
                break
        if ok:
            scene = {"groups": groups, "relation": relation, "objects": objects, "image_size": image_size}
            scene["captions"] = scene_captions(scene)
            scene["caption"] = scene["captions"][0]
            return scene


def parse_combinations(items: Iterable[str], shapes: Sequence[str], colors: Sequence[str]) -> set[tuple[str, str]]:
    """`["red circle", "blue square"]` -> {("red", "circle"), ("blue", "square")}, checked against the vocabulary."""
    combos = set()
    for item in items:
        words = item.strip().lower().split()
        if len(words) != 2 or words[0] not in colors or words[1] not in shapes:
            raise DataError(f"held-out combination {item!r} must be '<colour> <shape>' with a colour from "
                            f"{list(colors)} and a shape from {list(shapes)}.")
        combos.add((words[0], words[1]))
    return combos


def _check_vocab(shapes: Sequence[str], colors: Sequence[str], max_objects: int) -> None:
    bad_shapes = [s for s in shapes if s not in SHAPES]
    if bad_shapes or not shapes:
        raise DataError(f"`shapes` must be a non-empty subset of {SHAPES}, got {list(shapes)}.")
    bad_colors = [c for c in colors if c not in PALETTE]
    if bad_colors or not colors:
        raise DataError(f"`colors` must be a non-empty subset of {sorted(PALETTE)}, got {list(colors)}.")
    if not 1 <= max_objects <= 3:
        raise DataError(f"`max_objects` must be 1, 2 or 3 (more do not fit a 64 px scene legibly), got {max_objects}.")
    if len(shapes) * len(colors) < 2 and max_objects >= 2:
        raise DataError("two-group scenes need at least two colour-shape combinations; add a colour or a shape.")


def write_shapes(out: str | Path, *, train: int = 20000, test: int = 2000, image_size: int = 64,
                 shapes: Sequence[str] = DEFAULT_SHAPES, colors: Sequence[str] = DEFAULT_COLORS, max_objects: int = 3,
                 holdout_combinations: Iterable[str] = (), seed: int = 0, shard_size: int = 1000,
                 command: str | None = None) -> dict[str, Any]:
    """Write the shapes dataset to `out`; returns the card."""
    shapes, colors = [s.lower() for s in shapes], [c.lower() for c in colors]
    _check_vocab(shapes, colors, max_objects)
    if image_size < 32:
        raise DataError(f"`image_size` must be >= 32 for legible shapes, got {image_size}.")
    if train < 1 or test < 1:
        raise DataError(f"`train` and `test` must be >= 1, got {train} and {test}.")
    holdout = parse_combinations(holdout_combinations, shapes, colors)
    if holdout and len(holdout) >= len(shapes) * len(colors):
        raise DataError("`holdout_combinations` holds out every colour-shape pair; nothing would be left to train on.")

    def has_holdout(scene: dict[str, Any]) -> bool:
        return any((g["color"], g["shape"]) in holdout for g in scene["groups"])

    stats = {"test_with_holdout": 0, "train_rejected_holdout": 0, "train_rejected_duplicate": 0}
    with DatasetWriter(out, "shapes", maxcount=shard_size) as writer:
        # The test split is drawn first so train can reject any scene whose pixels equal a test scene's.
        for split, count in (("test", test), ("train", train)):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1])
            written = 0
            while written < count:
                scene = sample_scene(rng, shapes, colors, image_size, max_objects)
                if split == "train" and has_holdout(scene):
                    stats["train_rejected_holdout"] += 1
                    continue
                image = render_scene(scene, image_size)
                digest = content_hash(image)
                if split == "train" and digest in writer.hashes["test"]:
                    stats["train_rejected_duplicate"] += 1
                    continue
                if split == "test" and has_holdout(scene):
                    stats["test_with_holdout"] += 1
                captions = scene["captions"]
                meta = {"source": "shapes", "tasks": ["t2i", "i2t"], "split": split, "index": written,
                        "holdout": has_holdout(scene), **scene}
                sample = make_sample(f"shapes-{split}-{written:06d}", image=image,
                                     text=captions[int(rng.integers(len(captions)))], meta=meta)
                writer.write(split, sample, image_hash=digest)
                written += 1
        return writer.finish({
            "source": "shapes",
            "description": "procedural scenes of coloured shapes with compositional captions",
            "seed": seed,
            "image_size": [image_size, image_size],
            "tasks": ["t2i", "i2t"],
            "shapes": shapes,
            "colors": colors,
            "palette": {c: list(PALETTE[c]) for c in colors},
            "background": list(BACKGROUND),
            "max_objects": max_objects,
            "relations": list(RELATIONS),
            "positions": [p for p in POSITIONS if p],
            "holdout_combinations": sorted(f"{c} {s}" for c, s in holdout),
            "templates": ["{A} {relation} {B}", "{B} {inverse relation} {A}", "{A} to the {side} of {B}",
                          "{A} {position phrase}", "{A}"],
            "stats": stats,
            "action_dim": None,
            "state_dim": None,
            "command": command,
        })
