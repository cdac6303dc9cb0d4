"""The charts of the report and the demo: real numbers in, images of the requested size with the data drawn out."""

import threading

import numpy as np
import pytest

from unimask.training.plots import (action_chunk_plot, action_comparison_figure, action_comparison_plot,
                                    captioned_grid, frame_strip, loss_plot)

# matplotlib's default colour cycle (tab10): the first four series of every chart.
BLUE, ORANGE, GREEN, RED = (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)
CHUNK = np.array([[0.5, -0.5, 0.0, 1.0], [0.2, -0.1, 0.3, 1.0], [-0.4, 0.6, 0.1, -1.0]])
NAMES = ["x", "y", "z", "gripper"]


def pixels_of(image, rgb) -> np.ndarray:
    """A mask of the pixels within a small distance of colour `rgb` (antialiasing blends the edges of a line)."""
    return np.abs(np.asarray(image, dtype=int) - rgb).sum(axis=2) < 30


def test_action_chunk_plot_draws_one_coloured_line_per_dimension_at_the_requested_size():
    image = action_chunk_plot(CHUNK, NAMES, "drawer-open-v3: predicted action chunk")
    assert image.mode == "RGB" and image.size == (560, 280)
    assert np.asarray(image.convert("L")).std() > 20  # axes, text and lines on white, not a blank page
    for rgb in (BLUE, ORANGE, GREEN, RED):
        assert pixels_of(image, rgb).sum() > 50, rgb
    assert action_chunk_plot(CHUNK, NAMES, "t", size=(400, 220)).size == (400, 220)


def test_comparison_has_one_panel_per_dimension_each_on_its_own_scale():
    expert = CHUNK * [0.01, 0.1, 1.0, 1.0]  # dimensions three orders of magnitude apart
    figure = action_comparison_figure(expert, expert + 0.005, NAMES, "model vs expert: open the drawer")
    panels = figure.axes
    assert len(panels) == 4 and figure.get_suptitle() == "model vs expert: open the drawer"
    assert [axes.get_ylabel() for axes in panels] == [f"{name}\n(real units)" for name in NAMES]
    # Each panel fits its own data: the small x displacements are not flattened by the gripper's +-1.
    spans = [np.ptp(axes.get_ylim()) for axes in panels]
    assert spans[0] < 0.05 and spans[3] > 2.0
    # One shared x axis, labelled under the last panel only.
    assert [axes.get_xlabel() for axes in panels] == ["", "", "", "step in chunk"]
    assert [len(axes.get_lines()) for axes in panels] == [3] * 4  # expert, model and the zero line

    two = action_comparison_plot(expert[:, :2], -expert[:, :2], NAMES[:2], "t", panel_size=(480, 150))
    four = action_comparison_plot(expert, -expert, NAMES, "t", panel_size=(480, 150))
    assert (two.size, four.size) == ((480, 300), (480, 600))
    assert pixels_of(four, BLUE).sum() > 100 and pixels_of(four, ORANGE).sum() > 100


@pytest.mark.parametrize("call, message", [
    (lambda: action_chunk_plot(np.zeros(4), ["x"], "t"), r"`chunk` must be an array \[H, D\].*got shape \(4,\)"),
    (lambda: action_chunk_plot(np.zeros((0, 4)), NAMES, "t"), r"H >= 1, got shape \(0, 4\)"),
    (lambda: action_chunk_plot(CHUNK, ["x", "y"], "t"), "got 2 dimension names for 4 action dimensions"),
    (lambda: action_comparison_plot(CHUNK, CHUNK[:2], NAMES, "t"),
     r"`expert` has shape \(3, 4\) but `predicted` has shape \(2, 4\)"),
    (lambda: action_comparison_plot(CHUNK[0], CHUNK, NAMES, "t"), r"`expert` must be an array.*got shape \(4,\)"),
    (lambda: loss_plot({"loss": [3.0, 2.0]}, "t", steps=[1, 2, 3]),
     r"loss series 'loss' has shape \(2,\) but `steps` has shape \(3,\)"),
    (lambda: loss_plot({}, "t", steps=[]), "`series` is empty"),
])
def test_bad_shapes_raise_a_value_error_naming_the_shape(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_loss_plot_draws_every_series_even_one_logged_at_some_steps_only():
    steps = np.arange(1, 101) * 10
    total = 6.0 / np.sqrt(np.arange(1, 101))
    sparse = np.where(np.arange(100) % 3 == 0, total + 0.5, np.nan)  # a task loss seen at every third log step
    image = loss_plot({"loss": total, "loss/t2i": sparse}, "training loss", steps)
    assert image.mode == "RGB" and image.size == (560, 300)
    assert pixels_of(image, BLUE).sum() > 200 and pixels_of(image, ORANGE).sum() > 200


def test_loss_plot_uses_a_log_axis_when_the_loss_spans_decades():
    def middle_height(values):
        """Where the line crosses the middle column, as a fraction of its height (0 = its lowest point)."""
        line = pixels_of(loss_plot({"loss": values}, "t", steps=[0, 1, 2]), BLUE)
        line[:100, 300:] = False  # the legend's sample line, in the top right corner above the falling curve
        columns = np.flatnonzero(line.any(axis=0))
        rows = [np.flatnonzero(line[:, c]).mean() for c in (columns[0], (columns[0] + columns[-1]) // 2, columns[-1])]
        return (rows[2] - rows[1]) / (rows[2] - rows[0])

    # 100 -> 10 -> 1 is a straight line on a log axis: 10 sits halfway. On a linear axis it would sit at 9/99.
    assert middle_height([100.0, 10.0, 1.0]) == pytest.approx(0.5, abs=0.05)
    # 3 -> 2 -> 1 spans less than a decade: linear axis, 2 also halfway (on a log axis it would sit at 0.63).
    assert middle_height([3.0, 2.0, 1.0]) == pytest.approx(0.5, abs=0.05)
    assert middle_height([3.0, 1.5, 1.0]) == pytest.approx(0.25, abs=0.05)


def test_charts_drawn_from_threads_match_the_serial_drawing():
    expected = np.asarray(action_chunk_plot(CHUNK, NAMES, "t"))
    results = [None] * 4

    def draw(index):
        results[index] = np.asarray(action_chunk_plot(CHUNK, NAMES, "t"))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(result, expected) for result in results)


def test_frame_strip_picks_evenly_spaced_frames_first_and_last_included():
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(25)]
    assert frame_strip(frames, max_frames=5)[0, ::4, 0].tolist() == [0, 6, 12, 18, 24]
    assert frame_strip(frames[:3], max_frames=5).shape == (4, 12, 3)  # fewer frames than asked: all of them
    scaled = frame_strip(frames, max_frames=2, scale=3)
    assert scaled.shape == (12, 24, 3) and scaled[0, ::12, 0].tolist() == [0, 24]
    with pytest.raises(ValueError, match="`frames` is empty"):
        frame_strip([])


LONG_INSTRUCTION = "pick up the puck and place it on the red target marker at the far end of the table, then let go"


def title_band_touches_an_edge(image, band: int) -> bool:
    """Whether dark (text) pixels of the top `band` rows reach the left or right 3 pixels: a title cut by the edge."""
    dark = np.asarray(image.convert("L"))[:band] < 128
    return bool(dark[:, :3].any() or dark[:, -3:].any())


def test_a_long_instruction_title_wraps_inside_the_picture():
    chunk_plot = action_chunk_plot(CHUNK, NAMES, f"{LONG_INSTRUCTION} (predicted chunk)")
    comparison = action_comparison_plot(CHUNK, CHUNK, NAMES, f"model vs expert: {LONG_INSTRUCTION}")
    assert not title_band_touches_an_edge(chunk_plot, 60) and not title_band_touches_an_edge(comparison, 60)
    figure = action_comparison_figure(CHUNK, CHUNK, NAMES, f"model vs expert: {LONG_INSTRUCTION}")
    assert figure.get_suptitle().count("\n") >= 1  # wrapped, every word kept
    assert figure.get_suptitle().replace("\n", " ") == f"model vs expert: {LONG_INSTRUCTION}"


def test_captioned_grid_puts_each_caption_beneath_its_image():
    images = [np.full((8, 8, 3), rgb, np.uint8) for rgb in (RED, GREEN, BLUE)]
    captions = ["a red square", "green", "a long caption that has to wrap over several lines of its cell"]
    grid = captioned_grid(images, captions, columns=2, cell=64)
    gap = 8
    assert grid.size[0] == 2 * (64 + gap) + gap  # two columns; the third image starts the second row
    dark = np.asarray(grid.convert("L")) < 100
    boxes = []
    for rgb in (RED, GREEN, BLUE):
        rows, columns = np.nonzero(pixels_of(grid, rgb))
        assert np.ptp(rows) + 1 == 64 and np.ptp(columns) + 1 == 64, rgb  # scaled to the cell, nearest neighbour
        boxes.append((rows.min(), rows.max(), columns.min(), columns.max()))
    for top, bottom, left, right in boxes:
        assert dark[bottom + 1:bottom + 20, left:right + 1].any()  # the caption's first line, right beneath
        assert not dark[max(0, top - gap):top, left:right + 1].any()  # nothing written above the picture
    blue_top, blue_bottom, blue_left, blue_right = boxes[2]
    assert blue_top > boxes[0][1] + 20  # the second row starts below the first row's captions
    below_blue = np.nonzero(dark[blue_bottom + 1:])
    assert np.ptp(below_blue[0]) > 20  # wrapped onto several lines
    assert blue_left - gap <= below_blue[1].min() and below_blue[1].max() <= blue_right + gap  # inside its cell
    with pytest.raises(ValueError, match="one caption per image"):
        captioned_grid(images, captions[:2])
