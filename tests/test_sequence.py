import pytest
import torch

from template_builder import TemplateBuilder
from unimask.sequence import CONDITION, PAD_SEGMENT, TARGET, SequenceError, collate


@pytest.fixture
def builder(small_vocab):
    return TemplateBuilder(small_vocab, caption_length=6, image_tokens=4, action_tokens=3, state_tokens=2)


def test_t2i_layout(builder, small_vocab):
    v = small_vocab
    seq = builder.t2i([5, 6], [0, 1, 2, 3])
    expected = [v.special_id("t2i"), 5, 6, v.special_id("soi"), *v.to_id("image", [0, 1, 2, 3]).tolist(),
                v.special_id("eoi")]
    assert seq.input_ids.tolist() == expected
    assert seq.segment_ids.tolist() == [CONDITION] * 3 + [TARGET] * 6  # <soi> belongs to the image segment
    assert seq.content_mask.tolist() == [False, True, True, False, True, True, True, True, False]
    assert (seq.modality_ids[4:8] == small_vocab.modality_index("image")).all()


def test_text_target_ends_with_eos_then_pad(builder, small_vocab):
    seq = builder.i2t([0, 1, 2, 3], [7, 8])
    target = seq.input_ids[seq.segment_ids == TARGET].tolist()
    assert target == [7, 8, small_vocab.eos_id, small_vocab.pad_id, small_vocab.pad_id, small_vocab.pad_id]
    assert (seq.modality_ids[seq.segment_ids == TARGET] == small_vocab.modality_index("text")).all()
    with pytest.raises(SequenceError, match="caption_length - 1 = 5"):
        builder.i2t([0, 1, 2, 3], [1, 2, 3, 4, 5, 6])


def test_vla_with_state_and_masked_target(builder, small_vocab):
    seq = builder.vla([0, 1, 2, 3], [9, 10], None, state_codes=[1, 4])
    target = seq.segment_ids == TARGET
    payload = target & seq.content_mask
    assert (seq.input_ids[payload] == small_vocab.mask_id).all() and int(payload.sum()) == 3
    assert (seq.modality_ids[seq.content_mask & (seq.segment_ids == CONDITION)] != small_vocab.modality_index("special")).all()
    assert int((seq.modality_ids == small_vocab.modality_index("state")).sum()) == 2


def test_bad_inputs_raise(builder):
    with pytest.raises(SequenceError, match="prompt is empty"):
        builder.t2i([], [0, 1, 2, 3])
    with pytest.raises(SequenceError, match="expected 4 image codes"):
        builder.t2i([1], [0, 1])
    with pytest.raises(ValueError, match="image codes must lie"):
        builder.t2i([1], [0, 1, 2, 99])
    with pytest.raises(SequenceError, match="empty list"):
        collate([], pad_id=0)


def test_collate_padding_sides_and_positions(builder, small_vocab):
    seqs = [builder.t2i([5], [0, 1, 2, 3]), builder.t2i([5, 6, 7], [0, 1, 2, 3])]
    right = collate(seqs, pad_id=small_vocab.pad_id)
    assert right.input_ids.shape == (2, 10)
    assert right.segment_ids[0, -2:].tolist() == [PAD_SEGMENT, PAD_SEGMENT]
    assert right.position_ids[0, :8].tolist() == list(range(8))
    left = collate(seqs, pad_id=small_vocab.pad_id, padding_side="left")
    assert left.segment_ids[0, :2].tolist() == [PAD_SEGMENT, PAD_SEGMENT]
    assert left.position_ids[0, 2:].tolist() == list(range(8))
    # Same tokens at the same positions either way.
    assert torch.equal(right.input_ids[0, :8], left.input_ids[0, 2:])
    assert left.tasks == ["t2i", "t2i"]


def test_payload_slots_number_each_segment_from_one_whatever_precedes_it(builder, small_vocab):
    short = builder.vla([0, 1, 2, 3], [9], None, state_codes=[2, 3])
    long = builder.vla([3, 2, 1, 0], [4, 5, 6, 7, 8], None, state_codes=[1, 1])
    batch = collate([short, long], pad_id=small_vocab.pad_id, padding_side="left")
    for row in range(2):
        slots, content = batch.slot_ids[row], batch.content_mask[row]
        assert (slots[~content] == 0).all()
        payload = slots[content].tolist()
        # image codes 1..4, the instruction 1..n, the state 1..2, then the action chunk 1..3 (its step-dimension place)
        n = 1 if row == 0 else 5
        assert payload == [1, 2, 3, 4, *range(1, n + 1), 1, 2, 1, 2, 3]
