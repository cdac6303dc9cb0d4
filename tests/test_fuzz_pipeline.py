"""Fuzzing the pipeline API with hypothesis: every call either answers well (strings, images, finite actions of the
right shape, infilled codes that keep the given ones) or raises an `InputError` (the documented family,
`InputTypeError` included) — never another exception, never silent garbage (a non-integer infill target or an
unknown task is never answered), never a hang (each call has a deadline; steps are bounded by the target's tokens).

300 cases run by default; `-m slow` runs 1,200 more."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tiny_bundle import make_tiny_bundle
from unimask import InputError, UnifiedPipeline

DEFAULT = settings(max_examples=300, deadline=20_000, suppress_health_check=list(HealthCheck), derandomize=True)
SLOW = settings(max_examples=1200, deadline=20_000, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UnifiedPipeline.from_pretrained(make_tiny_bundle(tmp_path_factory.mktemp("fuzz")))


numbers = st.one_of(st.integers(-10, 10**20), st.floats(allow_nan=True, allow_infinity=True), st.just(None),
                    st.booleans(), st.text(max_size=4), st.just([1, 2]))


def mostly(good, bad):
    """Good values five times out of six: a call has several arguments, and the answering paths need fuzzing too
    (the test counts both outcomes)."""
    return st.sampled_from([True] * 5 + [False]).flatmap(lambda ok: good if ok else bad)


steps = mostly(st.integers(1, 8), st.one_of(st.integers(-3, 300), numbers))
guidance = mostly(st.floats(0, 5), numbers)
texts = mostly(st.one_of(st.sampled_from(["open the drawer", "the digit seven"]), st.text(min_size=1, max_size=30)),
               st.one_of(st.sampled_from(["<|eos|> seven", "\ud800 broken", "x" * 5000, "   ", ""]), st.integers(),
                         st.just(None)))


@st.composite
def images(draw):
    kind = draw(st.sampled_from(["uint8"] * 4 + ["float", "pil", "wrong", "tensor"]))
    h, w = draw(st.integers(0, 70)), draw(st.integers(0, 70))
    if kind == "uint8":
        return np.full((h, w, draw(st.sampled_from([1, 3, 4]))), draw(st.integers(0, 255)), np.uint8)
    if kind == "float":
        return np.full((h, w, 3), draw(st.floats(allow_nan=True, allow_infinity=True)), np.float32)
    if kind == "pil":
        return Image.new(draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"])), (max(1, w), max(1, h)))
    if kind == "tensor":
        return torch.full((3, h, w), draw(st.one_of(st.floats(-2, 300), st.just(math.nan))))
    return draw(st.sampled_from([None, "a picture", 3, [[1, 2]], np.zeros((2, 2, 2, 3), np.uint8)]))


OUTCOMES = {"answered": 0, "refused": 0}


def checked(call):
    """Run `call`; only a good answer or an InputError may come out."""
    try:
        out = call()
    except InputError:
        OUTCOMES["refused"] += 1
        return None
    OUTCOMES["answered"] += 1
    return out


def check_caption(pipe, imgs, n_steps, guidance, seed):
    out = checked(lambda: pipe.caption(imgs, steps=n_steps, guidance_scale=guidance, seed=seed))
    if out is not None:
        assert len(out) == len(imgs) and all(isinstance(c, str) for c in out)


def check_image(pipe, prompts, n_steps, guidance, seed, temperature):
    out = checked(lambda: pipe.text_to_image(prompts, steps=n_steps, guidance_scale=guidance, seed=seed,
                                             temperature=temperature))
    if out is not None:
        assert len(out) == len(prompts) and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in out)


def check_act(pipe, imgs, instructions, state, n_steps, seed, remask, executed):
    options = {} if remask is None else {"remask_threshold": remask}
    out = checked(lambda: pipe.act(imgs, instructions, state=state, steps=n_steps, seed=seed, executed=executed,
                                   **options))
    if out is not None:
        assert out.shape == (len(imgs), 2, 4) and out.dtype == np.float32 and np.isfinite(out).all()
        if executed is not None:  # the frozen start comes back as the bins quantise it
            tokenizer = pipe.processor.tokenizers["action"]
            assert np.array_equal(out[:, :1], tokenizer.decode(tokenizer.encode(np.asarray(executed, np.float32))))


def check_infill(pipe, task, condition, target, n_steps, seed):
    out = checked(lambda: pipe.infill(task, condition, target, steps=n_steps, seed=seed))
    if out is not None:
        given = np.asarray(target)
        assert task == "vla" and given.dtype.kind in "iu", f"answered task {task!r} with a {given.dtype} target"
        assert tuple(out.shape) == given.shape and bool(((out >= 0) & (out < 16)).all())
        assert np.array_equal(out.numpy()[given >= 0], given[given >= 0])


def check_generate(pipe, task, prompts, n_steps):
    out = checked(lambda: pipe.generate(task, {"prompt": prompts}, steps=n_steps))
    if out is not None:
        assert task == "t2i" and len(out) == len(prompts)


@st.composite
def targets(draw, rows):
    codes = np.where(draw(st.lists(st.booleans(), min_size=8 * rows, max_size=8 * rows)), -1,
                     draw(st.lists(st.integers(0, 15), min_size=8 * rows, max_size=8 * rows))).reshape(rows, 8)
    if draw(st.booleans()):
        return codes
    bad = draw(st.sampled_from(["float", "half", "bool", "high", "low", "shape", "text"]))
    return {"float": codes.astype(np.float64), "half": codes + 0.5, "bool": codes >= 0, "high": codes * 0 + 16,
            "low": codes * 0 - 2, "shape": codes[:, :7], "text": "codes"}[bad]


def fuzz(pipe, data):
    which = data.draw(st.sampled_from(["caption", "image", "act", "infill", "generate"]))
    seed = data.draw(mostly(st.integers(0, 100), st.one_of(st.integers(-5, 2**70), numbers)))
    if which == "caption":
        imgs = data.draw(mostly(st.lists(images(), min_size=1, max_size=3), st.one_of(st.just([]), images())))
        check_caption(pipe, imgs, data.draw(steps), data.draw(guidance), seed)
    elif which == "image":
        prompts = data.draw(mostly(st.lists(texts, min_size=1, max_size=3), st.one_of(st.just([]), texts)))
        check_image(pipe, prompts, data.draw(steps), data.draw(guidance), seed, data.draw(guidance))
    elif which == "infill":
        task = data.draw(mostly(st.just("vla"), st.one_of(st.sampled_from(["t2i", "foo", ""]), st.integers())))
        frame = np.full((32, 32, 3), data.draw(st.integers(0, 255)), np.uint8)
        condition = {"image": [frame], "instruction": ["open the drawer"], "state": np.zeros((1, 3))}
        check_infill(pipe, task, condition, data.draw(targets(1)), data.draw(steps), seed)
    elif which == "generate":
        task = data.draw(mostly(st.just("t2i"), st.one_of(st.text(max_size=5), st.integers(), st.none())))
        check_generate(pipe, task, ["the digit seven"], data.draw(steps))
    else:
        count = data.draw(mostly(st.integers(1, 3), st.just(0)))
        imgs = [data.draw(images()) for _ in range(count)]
        instructions = data.draw(st.lists(texts, min_size=count, max_size=count))
        state = data.draw(mostly(st.just(np.zeros((count, 3))),
                                 st.sampled_from([np.full((count, 3), math.nan), np.zeros((count, 5)), None, "state"])))
        executed = data.draw(st.one_of(st.none(), mostly(
            st.floats(-2, 2).map(lambda v: np.full((count, 1, 4), v)),
            st.sampled_from([np.zeros((count, 2, 4)), np.full((count, 1, 4), math.inf), np.zeros((count, 1, 3)),
                             np.zeros((count + 1, 1, 4)), "executed", [[None]]]))))
        check_act(pipe, imgs, instructions, state, data.draw(steps), seed, data.draw(mostly(st.none(), numbers)),
                  executed)


def run_fuzz(pipe, budget) -> None:
    OUTCOMES.update(answered=0, refused=0)
    budget(given(data=st.data())(lambda data: fuzz(pipe, data)))()
    # Both paths ran: good inputs were answered and bad ones refused (a check that cannot pass vacuously).
    assert OUTCOMES["answered"] > 20 and OUTCOMES["refused"] > 100, OUTCOMES


def test_the_pipeline_answers_or_raises_an_input_error(pipe):
    run_fuzz(pipe, DEFAULT)


@pytest.mark.slow
def test_the_pipeline_answers_or_raises_an_input_error_long(pipe):
    run_fuzz(pipe, SLOW)
