import numpy as np
import pytest
import torch
from PIL import Image

from tiny_bundle import make_tiny_bundle
from unimask import UnifiedPipeline


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UnifiedPipeline.from_pretrained(make_tiny_bundle(tmp_path_factory.mktemp("bundle")))


def frames(n):
    return [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(n)]


def test_caption_and_generate_text(pipe):
    captions = pipe.caption(frames(2), steps=4, seed=0)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert pipe.caption(frames(2), steps=4, seed=0) == captions  # deterministic
    out = pipe.caption(frames(1), steps=4, return_trajectory=True)
    assert out.forward_passes <= 4 and len(out.trajectory) == out.forward_passes
    assert len(pipe.generate_text(["the digit"], steps=4)) == 1


def test_text_to_image_with_trajectory(pipe):
    out = pipe.text_to_image(["a red square", "the digit seven"], steps=4, guidance_scale=2.0, seed=1,
                             return_trajectory=True)
    assert len(out.outputs) == 2 and isinstance(out.outputs[0], Image.Image) and out.outputs[0].size == (32, 32)
    assert len(out.trajectory_images) == 4 and len(out.trajectory_images[0]) == 2
    masked = [int((t == pipe.vocab.mask_id).sum(dim=1)[0]) for t in out.trajectory]
    assert masked[-1] == 0 and masked == sorted(masked, reverse=True)
    again = pipe.text_to_image(["a red square", "the digit seven"], steps=4, guidance_scale=2.0, seed=1)
    assert np.array_equal(np.asarray(again[0]), np.asarray(out.outputs[0]))


def test_act_returns_real_units_and_respects_state(pipe):
    actions = pipe.act(frames(3), ["open the drawer"] * 3, state=np.zeros((3, 3)), steps=2)
    assert actions.shape == (3, 2, 4) and actions.dtype == np.float32
    normalizer = pipe.processor.tokenizers["action"].normalizer
    low, high = normalizer.low, normalizer.high
    assert (actions >= low - 1e-6).all() and (actions <= high + 1e-6).all()
    with pytest.raises(ValueError, match="trained with state tokens"):
        pipe.act(frames(1), ["open the drawer"])
    with pytest.raises(ValueError, match=r"`state` must have shape \(1, 3\)"):
        pipe.act(frames(1), ["open the drawer"], state=np.zeros((1, 4)))


def test_infill_keeps_given_tokens(pipe):
    target = torch.full((1, 8), -1)
    target[0, :4] = torch.tensor([1, 2, 3, 4])
    done = pipe.infill("vla", {"image": frames(1), "instruction": ["open the drawer"], "state": np.zeros((1, 3))},
                       target, steps=2)
    assert done[0, :4].tolist() == [1, 2, 3, 4] and (done >= 0).all() and (done < 16).all()
    with pytest.raises(ValueError, match="use 'image' instead of 'images'"):
        pipe.infill("vla", {"images": frames(1), "instruction": ["x"]}, target)


def test_bad_inputs_name_the_argument(pipe):
    with pytest.raises(ValueError, match="`prompts` is empty"):
        pipe.text_to_image([])
    with pytest.raises(TypeError, match="`prompts` must be a list"):
        pipe.text_to_image("a red square")
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1 and at most 256 .*, got 0"):
        pipe.text_to_image(["a red square"], steps=0)
    with pytest.raises(TypeError, match="unknown scheduler option"):
        pipe.text_to_image(["a red square"], choice_temp=2.0)
    with pytest.raises(ValueError, match="more than max_condition_text"):
        pipe.text_to_image(["red " * 200])
    with pytest.raises(ValueError, match="non-empty string"):
        pipe.act(frames(1), [""], state=np.zeros((1, 3)))
    with pytest.raises(Exception, match="PIL image"):
        pipe.caption(["not an image"])
    with pytest.raises(ValueError, match="inputs differ in length: 2 images, 1 instructions"):
        pipe.act(frames(2), ["x"], state=np.zeros((2, 3)))


def test_loose_ends_of_the_api_raise_the_documented_errors(pipe, tmp_path):
    from unimask import InputError, InputTypeError

    condition = {"image": frames(1), "instruction": ["open the drawer"], "state": np.zeros((1, 3))}
    for target in (torch.full((1, 8), 0.5), np.full((1, 8), 1.0), [[True] * 8]):
        with pytest.raises(InputTypeError, match="must be integer codes, -1 where unknown"):
            pipe.infill("vla", condition, target)
    with pytest.raises(InputTypeError, match="must be an integer array"):
        pipe.infill("vla", condition, [[1, "two"]])
    with pytest.raises(InputError, match="unknown task 'foo'; the registered tasks are"):
        pipe.generate("foo", {})
    with pytest.raises(InputError, match="unknown task"):
        pipe.generate(["t2i"], {})
    with pytest.raises(InputTypeError, match=r"`directory` must be a folder path .* got NoneType"):
        UnifiedPipeline.from_pretrained(None)
    with pytest.raises(InputError, match="does not exist") as missing:
        UnifiedPipeline.from_pretrained(tmp_path / "nothing")
    assert isinstance(missing.value, FileNotFoundError)
    with pytest.raises(InputTypeError, match="`bundle` must be a unimask Bundle"):
        UnifiedPipeline("runs/model")


def test_one_seed_per_input_gives_each_input_its_own_output_alone_or_batched(pipe):
    both = pipe.text_to_image(["a red square", "the digit seven"], steps=4, seed=[11, 12], return_trajectory=True)
    alone = pipe.text_to_image(["the digit seven"], steps=4, seed=12, return_trajectory=True)
    assert torch.equal(both.codes[1], alone.codes[0])
    with pytest.raises(ValueError, match="lists 1 seeds for 2 inputs"):
        pipe.text_to_image(["a red square", "the digit seven"], seed=[3])
    with pytest.raises(TypeError, match="one integer per input"):
        pipe.text_to_image(["a red square", "the digit seven"], seed=[[1, 2], [3, 4]])
