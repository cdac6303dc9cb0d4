import os
import shutil
import subprocess

import numpy as np
import pytest

from tiny_bundle import make_tiny_bundle
from unimask import UnifiedPipeline
from unimask.demos.app import DemoFunctions, DemoInputError, build_app


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UnifiedPipeline.from_pretrained(make_tiny_bundle(tmp_path_factory.mktemp("bundle"), image_size=64,
                                                            state_dim=4))


def test_tab_functions_and_their_input_checks(pipe):
    demo = DemoFunctions(pipe)
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert isinstance(demo.caption(frame, steps=8), str)
    image, gallery = demo.text_to_image("the digit seven", steps=3, guidance=2.0, seed=1)
    assert image.size == (256, 256) and len(gallery) == 3
    plot, rows = demo.actions("drawer-open-v3", seed=1, steps=2)
    assert len(rows) == 2 and len(rows[0]) == 5 and np.asarray(plot).std() > 0
    strip, status = demo.episode("reach-v3", seed=1, max_steps=5)
    assert strip.shape[0] == 64 and "after 5 steps" in status
    with pytest.raises(DemoInputError, match="Upload or pick an image"):
        demo.caption(None)
    with pytest.raises(DemoInputError, match="Type a prompt"):
        demo.text_to_image("   ")
    with pytest.raises(DemoInputError, match="`steps` must be between 1 and 64"):
        demo.text_to_image("the digit seven", steps=0)
    with pytest.raises(DemoInputError, match="Pick a task"):
        demo.actions("fly-v3")


@pytest.mark.slow
def test_app_serves_each_tab_on_localhost_and_renders(pipe, tmp_path):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from gradio_client import Client

    app = build_app(pipe)
    app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True)
    try:
        client = Client(app.local_url, verbose=False)
        image, gallery = client.predict("the digit seven", 3, 2.0, 0, api_name="/text_to_image")
        assert os.path.isfile(image) and len(gallery) == 3
        status = client.predict("reach-v3", 1, api_name="/episode")[1]
        assert "steps" in status
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        if not os.path.exists(chromium):
            pytest.skip("headless Chromium is not installed (apt-get install chromium) - screenshot check skipped")
        shot = tmp_path / "page.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
                        app.local_url], check=True, timeout=120, capture_output=True)
        from PIL import Image

        assert np.asarray(Image.open(shot).convert("L")).std() > 5
    finally:
        app.close()
