"""Caption metrics: is the right digit named, are a shapes scene's attributes stated?"""

from __future__ import annotations

import re
from typing import Any, Sequence

from unimask.training.data.writers.digits import DIGIT_WORDS

_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def digit_in_caption(caption: str) -> int | None:
    """The digit a caption names (as a word or a numeral), or None when it names none or several different ones."""
    words = re.findall(r"[a-z]+|\d", caption.lower())
    named = {DIGIT_WORDS.index(w) for w in words if w in DIGIT_WORDS} | {int(w) for w in words if w.isdigit()}
    return named.pop() if len(named) == 1 else None


def digit_caption_accuracy(captions: Sequence[str], labels: Sequence[int]) -> float:
    """Fraction of captions that name exactly the true digit."""
    if len(captions) != len(labels) or not captions:
        raise ValueError(f"need as many captions as labels (> 0), got {len(captions)} and {len(labels)}.")
    return sum(digit_in_caption(c) == int(y) for c, y in zip(captions, labels)) / len(captions)


def shapes_caption_attributes(caption: str, scene: dict[str, Any], colors: Sequence[str],
                              shapes: Sequence[str]) -> dict[str, bool]:
    """Which of the scene's attributes a caption states: each group's colour, shape and count, and the position or
    relation, in a group-by-group reading of "<count> <colour> <shape> ... <relation> <count> <colour> <shape>"."""
    text = caption.lower()
    pattern = (r"\b(a|an|one|two|three|four|five)\s+(" + "|".join(colors) + r")\s+(" + "|".join(shapes) +
               r")(?:e?s)?\b")
    mentions = [(_NUMBER_WORDS[c], col, shp) for c, col, shp in re.findall(pattern, text)]
    groups = scene["groups"]
    want = [(g["count"], g["color"], g["shape"]) for g in groups]
    said_colors = {m[1] for m in mentions}
    said_pairs = {(m[1], m[2]) for m in mentions}
    result = {
        "color": all(g[1] in said_colors for g in want),
        "shape": all((g[1], g[2]) in said_pairs for g in want),
        "count": sorted(mentions) == sorted(want),
    }
    if len(groups) == 1:
        position = groups[0].get("position")
        words = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}
        result["position"] = (position is None and not re.search(r"\b(left|right|top|bottom)\b", text)) or (
            position is not None and words[position] in text)
    else:
        relation = scene["relation"]
        inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[relation]
        side = relation.split()[0]
        if len(mentions) >= 2 and (mentions[0][1], mentions[0][2]) == (want[1][1], want[1][2]):
            expected = (inverse, f"to the {inverse.split()[0]} of") if " of" in inverse else (inverse,)
        else:
            expected = (relation, f"to the {side} of") if " of" in relation else (relation,)
        result["position"] = any(e in text for e in expected)
    result["all"] = all(result.values())
    return result
