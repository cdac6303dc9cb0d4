import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from tiny_bundle import make_tiny_bundle
from unimask import UnifiedPipeline
from unimask.demos.app import ROBOT_SEED, DemoFunctions, DemoInputError, build_app
from unimask.training.samples import example_images

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle"), image_size=64, state_dim=4)


@pytest.fixture(scope="module")
def pipe(bundle_dir):
    return UnifiedPipeline.from_pretrained(bundle_dir)


def test_tab_functions_return_what_the_widgets_show(pipe):
    demo = DemoFunctions(pipe)
    grey = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    caption = demo.caption(np.repeat(grey[..., None], 3, axis=2), steps=8)
    assert isinstance(caption, str)
    assert demo.caption(grey, steps=8) == caption  # a grey upload is read as its RGB replicate

    image, gallery, info = demo.text_to_image("the digit seven", steps=3, guidance=2.0, seed=1)
    assert image.size == (256, 256) and len(gallery) == 3 and gallery[-1][1] == "step 3/3"
    assert np.array_equal(np.asarray(gallery[-1][0]), np.asarray(image))  # the last step is the final image
    again, _, _ = demo.text_to_image("the digit seven", steps=3, guidance=2.0, seed=1)
    assert np.array_equal(np.asarray(again), np.asarray(image)) and info.startswith("3 steps,")

    seen, plot, rows, info, imagined = demo.actions("drawer-open-v3", seed=ROBOT_SEED, steps=2)
    assert imagined is None  # the tiny checkpoint has no foresight rows
    assert seen.shape == (64, 64, 3) and seen.std() > 5  # the rendered first frame of the episode
    state = None
    if pipe.uses_state:
        from unimask.training.envs.gym import MetaWorldEnv

        env = MetaWorldEnv("drawer-open-v3")
        state = env.reset(seed=ROBOT_SEED)[0]["observation.state"][None]
        env.close()
    direct = pipe.act([seen], ["open the drawer"], state=state, steps=2)[0]
    assert [row[0] for row in rows] == [0, 1] and np.allclose([row[1:] for row in rows], direct, atol=1e-4)
    assert np.abs(direct).max() <= 1.0 + 1e-6  # real units: the action tokenizer was fitted on [-1, 1]
    assert np.asarray(plot).std() > 0 and "open the drawer" in info
    upload = np.full((40, 50, 4), 200, np.uint8)
    seen_upload, _, _, info_upload, _ = demo.actions("drawer-open-v3", ROBOT_SEED, upload, 2)
    assert seen_upload.shape == (40, 50, 3) and "uploaded" in info_upload

    strip, status = demo.episode("reach-v3", seed=ROBOT_SEED, max_steps=5, steps=2)
    # horizon 2: chunks of 2, 2, 1 actions; 6 frames (the reset frame + 5) side by side
    assert strip.shape == (64, 6 * 64, 3) and "after 5 steps (3 chunks" in status


@pytest.mark.parametrize("call, message", [
    (lambda d: d.caption(None), "Upload or pick an image"),
    (lambda d: d.caption(np.zeros((4, 4, 3), np.uint8)), "at least 8x8"),
    (lambda d: d.caption(np.zeros((64, 64, 3), np.uint8), steps=9), r"`steps` must be a whole number between 1 and 8"),
    (lambda d: d.text_to_image("   "), "Type a prompt"),
    (lambda d: d.text_to_image("x" * 201), "keep it under 200"),
    (lambda d: d.text_to_image("the digit seven", steps=0), "`steps` must be a whole number between 1 and 256"),
    (lambda d: d.text_to_image("the digit seven", guidance=-1), "`guidance` must be between 0.0 and 20.0"),
    (lambda d: d.text_to_image("the digit seven", seed=None), "`seed` must be a whole number"),
    (lambda d: d.text_to_image("the digit seven", seed=1.5), "`seed` must be a whole number"),
    (lambda d: d.actions("fly-v3"), "Pick a task from the list"),
    (lambda d: d.actions("reach-v3", steps=9), "`steps` must be a whole number between 1 and 8"),
    (lambda d: d.episode("reach-v3", max_steps=0), "`max_steps` must be a whole number between 1 and 500"),
    (lambda d: d.caption(Image.new("L", (6000, 6000))), "6000x6000 pixels, more than this demo takes"),
    (lambda d: d.caption(np.zeros((5000, 4000), np.uint8)), "4000x5000 pixels, more than this demo takes"),
])
def test_bad_inputs_get_a_message_naming_the_fix(pipe, call, message):
    with pytest.raises(DemoInputError, match=message):
        call(DemoFunctions(pipe))


def test_a_picture_file_too_large_is_refused_before_it_is_decoded(pipe, tmp_path):
    Image.new("1", (4097, 4097)).save(tmp_path / "big.png")
    with pytest.raises(DemoInputError, match="4097x4097 pixels, more than this demo takes"):
        DemoFunctions(pipe).caption(str(tmp_path / "big.png"))


def test_scripts_run_on_a_checkpoint(bundle_dir, tmp_path, capsys):
    from unimask.demos import caption_image, decode_actions, generate_images

    written = generate_images.main(["--checkpoint", str(bundle_dir), "--out", str(tmp_path / "gen"), "--steps", "3",
                                    "the digit seven", "a red square"])
    assert [Image.open(p).size for p in written] == [(64, 64)] * 2
    assert Image.open(tmp_path / "gen" / "01_steps.png").size == (3 * 64, 64)
    captions = caption_image.main(["--checkpoint", str(bundle_dir), "--steps", "8", *map(str, written)])
    assert len(captions) == 2 and f"{written[1]}: {captions[1]}" in capsys.readouterr().out
    chunk = decode_actions.main(["--checkpoint", str(bundle_dir), "--plot", str(tmp_path / "a.png")])
    assert chunk.shape == (2, 4) and Image.open(tmp_path / "a.png").size == (560, 280)
    assert "instruction: 'open the drawer'" in capsys.readouterr().out


def test_cli_defaults_to_localhost_and_rejects_a_missing_checkpoint(tmp_path, capsys):
    from unimask.cli import build_parser, main

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 7860, "runs/quickstart/model")
    assert main(["demo", "--checkpoint", str(tmp_path / "nothing")]) == 2
    assert "Run `unimask quickstart` first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def served(pipe):
    app = build_app(pipe)
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield app
    finally:
        app.close()


def test_each_tab_answers_through_gradio_client(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    assert served.local_url.startswith("http://127.0.0.1:")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    client = Client(served.local_url, verbose=False)
    Image.fromarray(example_images(64)[0][1]).save(tmp_path / "three.png")

    caption = client.predict(handle_file(str(tmp_path / "three.png")), 8, api_name="/caption")
    assert isinstance(caption, str)
    image, gallery, info = client.predict("the digit seven", 3, 2.0, 0, api_name="/text_to_image")
    assert Image.open(image).size == (256, 256) and len(gallery) == 3 and info.startswith("3 steps")
    seen, plot, table, info, _ = client.predict("drawer-open-v3", ROBOT_SEED, None, 2, api_name="/actions")
    assert Image.open(seen).size == (64, 64) and Image.open(plot).size == (560, 280)
    assert table["headers"] == ["step", "x", "y", "z", "gripper"] and len(table["data"]) == 2
    strip, status = client.predict("reach-v3", ROBOT_SEED, 5, 2, api_name="/episode")
    assert Image.open(strip).size == (6 * 64, 64) and "after 5 steps" in status
    with pytest.raises(AppError, match="Type a prompt first"):
        client.predict("  ", 3, 2.0, 0, api_name="/text_to_image")
    (tmp_path / "notes.png").write_text("a text file with a picture's name")
    with pytest.raises(AppError, match="not a picture this demo can read"):
        client.predict(handle_file(str(tmp_path / "notes.png")), 8, api_name="/caption")
    with pytest.raises(AppError, match="`seed` must be a whole number"):
        client.predict("the digit seven", 3, 2.0, "abc", api_name="/text_to_image")


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(pipe):
    """16 requests at once: served in a few model calls, and each image equals the one its seed gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    calls = []
    demo = DemoFunctions(pipe, max_batch=8)
    batch = demo._images.run
    demo._images.run = lambda key, items: calls.append(len(items)) or batch(key, items)
    alone = DemoFunctions(pipe, max_batch=1)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda seed: demo.text_to_image("the digit seven", 3, 2.0, seed), range(16)))
    assert sum(calls) == 16 and len(calls) <= 6 and max(calls) > 1, calls
    for seed in (0, 9):
        expected = np.asarray(alone.text_to_image("the digit seven", 3, 2.0, seed)[0], dtype=np.int16)
        # The same codes; the VQ decoder's float rounding in a batch moves a pixel by a level at most.
        assert np.abs(np.asarray(results[seed][0], dtype=np.int16) - expected).max() <= 1


def test_a_full_queue_refuses_at_once():
    import threading

    from unimask.demos.batching import Batcher, DemoBusyError

    started, gate = threading.Event(), threading.Event()

    def run(key, items):
        started.set()
        assert gate.wait(30)
        return items

    batcher = Batcher(run, threading.Lock(), max_batch=1, max_pending=1)
    first = threading.Thread(target=batcher, args=("k", 1))
    first.start()
    assert started.wait(10)  # the worker holds the first request
    second = threading.Thread(target=batcher, args=("k", 2))
    second.start()
    deadline = time.monotonic() + 10
    while len(batcher._pending) < 1 and time.monotonic() < deadline:
        time.sleep(0.001)  # the second request waits in the queue (the worker is busy with the first)
    with pytest.raises(DemoBusyError, match="busy"):
        batcher("k", 3)
    gate.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()


def test_one_bad_request_in_a_batch_fails_only_itself():
    import threading

    from unimask.demos.batching import Batcher

    def run(key, items):
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    batcher = Batcher(run, threading.Lock(), max_batch=8, wait_s=0.5)
    answers = {}

    def ask(item):
        try:
            answers[item] = batcher("k", item)
        except ValueError as err:
            answers[item] = str(err)

    threads = [threading.Thread(target=ask, args=(item,)) for item in ("a", "bad", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == {"a": "A", "bad": "bad item", "c": "C"}


def test_page_renders_in_headless_chromium(served, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the page screenshot check needs it")
    shot = tmp_path / "page.png"
    started = time.time()
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
                    served.local_url], check=True, timeout=120, capture_output=True)
    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    # A blank or failed page is one flat colour; the rendered app has text, widgets and the tab bar.
    assert grey.shape == (900, 1200) and grey.std() > 5, f"std {grey.std():.2f} after {time.time() - started:.0f} s"
    assert len(np.unique(grey)) > 20
    assert (grey < 40).sum() > 5000  # the dark example thumbnails of the Caption tab (digit scans, shapes scene)
