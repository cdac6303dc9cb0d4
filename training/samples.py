"""Sample inputs like the built-in datasets', for demos, scripts and pictures: no dataset on disk needed.

    from unimask.training.samples import digit_scans, example_images, shapes_scenes

    for caption, picture in example_images(64):          # uint8 [64, 64, 3] pictures with a line about each
        print(caption, pipe.caption([picture])[0])

Digit scans are the held-out images of the `digits` dataset (scikit-learn ships them, the `eval` extra installs it);
shapes scenes are drawn by the `shapes` dataset's renderer, with the caption that dataset would store for them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["digit_prompts", "digit_scans", "example_images", "shapes_scenes"]


def digit_prompts(labels: tuple[int, ...] = tuple(range(10))) -> list[str]:
    """The canonical caption of each digit label ("a handwritten seven"), the wording the quickstart's captions
    train on."""
    from unimask.training.data.writers.digits import digit_captions

    return [digit_captions(label)[0] for label in labels]


def digit_scans(labels: tuple[int, ...] = (3, 7, 0), image_size: int = 64) -> list[tuple[str, np.ndarray]]:
    """("held-out scan of a k", uint8 [S, S, 3]) for each label: the first scan of that digit in the digits dataset's
    default test split, upscaled as the dataset writer does. Raises ImportError without scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digit scans come from scikit-learn: pip install 'unimask[eval]'.") from err
    from unimask.training.data.writers.digits import split_indices, upscale_digit

    digits = load_digits()
    classes = digits.target.astype(int)
    is_test = split_indices(classes, test_fraction=0.2, seed=0)
    scans = []
    for label in labels:
        if label not in range(10):
            raise ValueError(f"digit labels are 0 to 9, got {label!r}.")
        index = int(np.flatnonzero(is_test & (classes == label))[0])
        scans.append((f"held-out scan of a {label}", upscale_digit(digits.images[index], image_size)))
    return scans


def shapes_scenes(count: int = 1, image_size: int = 64, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(caption, uint8 [S, S, 3]) for `count` random shapes scenes, the same for the same `seed`."""
    from unimask.training.data.writers.shapes import DEFAULT_COLORS, DEFAULT_SHAPES, render_scene, sample_scene

    if count < 1:
        raise ValueError(f"`count` must be >= 1, got {count}.")
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, DEFAULT_SHAPES, DEFAULT_COLORS, image_size=image_size) for _ in range(count)]
    return [(scene["caption"], render_scene(scene, image_size)) for scene in scenes]


def example_images(image_size: int = 64) -> list[tuple[str, np.ndarray]]:
    """Three held-out digit scans (a 3, a 7 and a 0; left out without scikit-learn) and one shapes scene."""
    try:
        examples = digit_scans((3, 7, 0), image_size)
    except ImportError:
        examples = []
    return examples + shapes_scenes(1, image_size)
