"""The public sample inputs (`unimask.training.samples`): real held-out digit scans and rendered shapes scenes."""

import numpy as np
import pytest

from unimask.training.samples import digit_prompts, digit_scans, example_images, shapes_scenes


def test_example_pictures_are_real_digits_and_a_shapes_scene():
    examples = example_images(64)
    labels = [label for label, _ in examples]
    assert labels[:3] == ["held-out scan of a 3", "held-out scan of a 7", "held-out scan of a 0"]
    assert all(picture.shape == (64, 64, 3) and picture.dtype == np.uint8 and picture.std() > 20
               for _, picture in examples)
    assert any(word in labels[3] for word in ("circle", "square", "triangle"))


def test_digit_scans_are_the_held_out_split_and_refuse_a_label_that_is_no_digit():
    from unimask.training.data.writers.digits import upscale_digit

    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    (label, scan), = digit_scans((5,), image_size=32)
    digits = load_digits()
    matches = [i for i in np.flatnonzero(digits.target == 5)
               if np.array_equal(upscale_digit(digits.images[i], 32), scan)]
    assert label == "held-out scan of a 5" and scan.shape == (32, 32, 3) and len(matches) == 1
    with pytest.raises(ValueError, match="digit labels are 0 to 9, got 10"):
        digit_scans((10,))


def test_shapes_scenes_repeat_with_their_seed_and_carry_their_caption():
    first, again, other = shapes_scenes(3, 48, seed=1), shapes_scenes(3, 48, seed=1), shapes_scenes(3, 48, seed=2)
    assert [c for c, _ in first] == [c for c, _ in again] != [c for c, _ in other]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again))
    assert all(picture.shape == (48, 48, 3) and caption.strip() for caption, picture in first)
    with pytest.raises(ValueError, match="`count` must be >= 1, got 0"):
        shapes_scenes(0)


def test_digit_prompts_are_the_canonical_captions():
    assert digit_prompts((0, 7)) == ["a handwritten zero", "a handwritten seven"]
