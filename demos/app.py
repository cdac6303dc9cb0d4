"""`unimask demo --checkpoint DIR`: a Gradio app with three tabs (caption, text to image, robot actions).

The tab functions are plain Python (`DemoFunctions`) so they can be tested without a browser: each validates its
inputs, raising `DemoInputError` with a message meant for the user, and otherwise only calls the pipeline (and, for
the robot tab, `gymnasium.make("unimask/MetaWorld-v0")`). `build_app` wires them to widgets and turns those errors
into `gr.Error` pop-ups. The server binds to 127.0.0.1 unless told otherwise and never sends analytics.

It uses public entry points only (docs/demo.md): `unimask`, `unimask.training.envs`, `unimask.training.plots` and
`unimask.training.samples`.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from unimask import ConfigError, InputError, MissingFileError, check_number
from unimask.training.plots import action_chunk_plot, frame_strip
from unimask.training.samples import example_images

from .batching import Batcher, DemoBusyError

DEFAULT_CHECKPOINT = "runs/quickstart/model"
MAX_PROMPT_CHARS = 200
MAX_SEED = 2**31 - 1
FORESIGHT_STEPS = 4  # MaskGIT steps of the imagined frame (foresight checkpoints)
MAX_UPLOAD_PIXELS = 4096 * 4096  # a larger picture is refused before it is decoded: the model reads 64 px anyway
ROBOT_SEED = 10**8  # evaluation seeds start here; the Meta-World dataset writer never uses them
# Meta-World's action: end-effector displacement (x, y, z) and gripper effort, each in [-1, 1].
METAWORLD_ACTION_NAMES = ("x", "y", "z", "gripper")


class DemoInputError(InputError):
    """A demo input is missing or out of range; the message is shown to the user as is."""


def _whole(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoInputError(f"`{name}` must be a whole number between {low} and {high}, got {value!r}.") from None
    if not number.is_integer() or not low <= number <= high:
        raise DemoInputError(f"`{name}` must be a whole number between {low} and {high}, got {value!r}.")
    return int(number)


def _number(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoInputError(f"`{name}` must be a number between {low} and {high}, got {value!r}.") from None
    if not low <= number <= high:
        raise DemoInputError(f"`{name}` must be between {low} and {high}, got {value!r}.")
    return number


def _rgb(image: Any, what: str) -> np.ndarray:
    """uint8 [H, W, 3] from what an upload gives (a file path, an array or a PIL image; grey or RGBA accepted)."""
    if image is None:
        raise DemoInputError(f"Upload or pick an {what} first.")
    if isinstance(image, dict) and "path" in image:  # an upload as gradio sends it (events run unpreprocessed)
        image = image["path"]
    from PIL import Image

    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as opened:
                _check_pixels(opened.width, opened.height, what)
                image = np.asarray(opened.convert("RGB"))
        except (OSError, Image.DecompressionBombError) as err:
            raise DemoInputError(f"The uploaded file is not a picture this demo can read ({type(err).__name__}); "
                                 "upload a PNG or JPEG.") from None
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, what)
    array = np.asarray(image)
    if array.ndim >= 2:
        _check_pixels(array.shape[1], array.shape[0], what)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise DemoInputError(f"The {what} must be a grey, RGB or RGBA picture, got an array of shape {array.shape}.")
    if min(array.shape[:2]) < 8:
        raise DemoInputError(f"The {what} is {array.shape[1]}x{array.shape[0]} pixels; give at least 8x8.")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise DemoInputError(f"The {what} holds values that are not finite numbers; upload a picture file.")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0  # float pictures in [0, 1]
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_UPLOAD_PIXELS:
        raise DemoInputError(f"The {what} is {width}x{height} pixels, more than this demo takes "
                             f"({MAX_UPLOAD_PIXELS:,} pixels, e.g. 4096x4096); upload a smaller picture.")


def _robot_envs():
    """`unimask.training.envs`, whose import registers the environment, once the robot extra is installed."""
    from unimask.training import envs

    # find_spec, not import: Meta-World must be imported after the environment has chosen MuJoCo's GL backend.
    missing = [name for name in ("gymnasium", "metaworld") if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoInputError(f"The robot tab needs {' and '.join(missing)}; install it with "
                             "pip install 'unimask[robot]'.")
    return envs


class DemoFunctions:
    """What each tab does, with input validation; `build_app` wires these to widgets.

    Requests arrive on many threads. Each one's inputs are checked on its own thread; then captions, images and action
    chunks wait in a bounded queue (`unimask.demos.batching.Batcher`) and requests with the same settings are served
    together in one model call (`max_batch` of them at most; 1 serves them one by one). The model and the
    simulator's GL context are used under one lock: on a CPU machine two model calls at once only make both slower.
    """

    def __init__(self, pipeline, max_batch: int = 16, max_pending: int = 64):
        self.pipe = pipeline
        processor = pipeline.processor
        self.caption_length = processor.length("text")
        self.image_tokens = processor.length("image") if pipeline.has("image") else 0
        self.action_tokens = processor.length("action") if pipeline.has("action") else 0
        self.image_size = pipeline.image_size or 64
        # A checkpoint trained with foresight rows also imagines the frame it will see k steps ahead.
        self.foresight = pipeline.has("action") and "future" in {
            segment.field for segment in processor.template("vla").extra_targets}
        action_dim = processor.settings.action_dim
        self.action_names = (METAWORLD_ACTION_NAMES if action_dim == len(METAWORLD_ACTION_NAMES)
                             else tuple(f"a{d}" for d in range(action_dim)))
        self._lock = threading.Lock()
        # One simulator per task, kept: building one takes about 0.8 s, a seeded reset 0.05 s and gives the same frame.
        # They live on the batcher's one worker thread, since a GL context works only on the thread that made it.
        self._first_frame_envs: dict[str, Any] = {}
        self._first_frames = Batcher(self._first_frames_batch, lock=self._lock, max_batch=max_batch,
                                     max_pending=max_pending)
        batcher = functools.partial(Batcher, lock=self._lock, max_batch=max_batch, max_pending=max_pending)
        self._captions = batcher(lambda steps, images: self.pipe.caption(images, steps=steps))
        self._images = batcher(self._images_batch)
        self._chunks = batcher(self._chunks_batch)

    # ----- Caption ------------------------------------------------------------------------------------------------
    def caption(self, image: Any, steps: int | None = None) -> str:
        """The generated caption of one picture; `steps` defaults to one per caption token."""
        image = _rgb(image, "image")
        steps = _whole("steps", self.caption_length if steps is None else steps, 1, self.caption_length)
        return self._captions(steps, image)

    # ----- Text to image ------------------------------------------------------------------------------------------
    def text_to_image(self, prompt: str, steps: int = 12, guidance: float = 3.0, seed: int = 0):
        """(final image, [(image, label) per denoising step], info text). Images are shown 4x with nearest-neighbour
        upscaling so every generated pixel stays visible."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise DemoInputError("Type a prompt first, e.g. 'the digit seven'.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise DemoInputError(f"The prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}.")
        steps = _whole("steps", steps, 1, self.image_tokens)
        guidance = _number("guidance", guidance, 0.0, 20.0)
        seed = _whole("seed", seed, 0, MAX_SEED)
        return self._images((steps, guidance), (prompt.strip(), seed))

    def _images_batch(self, settings: tuple[int, float], requests: list[tuple[str, int]]) -> list[tuple]:
        steps, guidance = settings
        start = time.perf_counter()
        out = self.pipe.text_to_image([prompt for prompt, _ in requests], steps=steps, guidance_scale=guidance,
                                      seed=[seed for _, seed in requests], return_trajectory=True)
        seconds = time.perf_counter() - start
        big = lambda im: im.resize((im.width * 4, im.height * 4), 0)  # noqa: E731  (0 = nearest)
        info = (f"{steps} steps, {out.forward_passes} model calls, {seconds:.2f} s for a batch of {len(requests)} "
                "request(s)")
        return [(big(out.outputs[row]), [(big(frame[row]), f"step {i + 1}/{steps}")
                                         for i, frame in enumerate(out.trajectory_images)], info)
                for row in range(len(requests))]

    # ----- Robot actions ------------------------------------------------------------------------------------------
    def _check_task(self, task: str):
        envs = _robot_envs()
        if task not in envs.MT10_TASKS:
            raise DemoInputError(f"Pick a task from the list ({', '.join(envs.MT10_TASKS)}), got {task!r}.")
        return envs

    def actions(self, task: str, seed: int = ROBOT_SEED, observation: Any = None, steps: int = 1):
        """(observation the model saw, chart, table rows [step, *values in real units], info text, the frame it
        imagines k steps ahead: foresight checkpoints only, else None).

        The observation is the task's first frame for `seed`, or the uploaded picture; the instruction (and the
        proprioceptive state, for checkpoints trained with it) always come from the task's episode.
        """
        envs = self._check_task(task)
        seed = _whole("seed", seed, 0, MAX_SEED)
        steps = _whole("steps", steps, 1, self.action_tokens)
        uploaded = None if observation is None else _rgb(observation, "observation")
        obs = self._first_frames(task, seed)
        image = obs[envs.IMAGE_KEY] if uploaded is None else uploaded
        instruction = obs[envs.INSTRUCTION_KEY]
        start = time.perf_counter()
        chunk, imagined = self._chunks(steps, (image, instruction, obs[envs.STATE_KEY]))  # (H, D), frame or None
        seconds = time.perf_counter() - start
        plot = action_chunk_plot(chunk, self.action_names, f"{instruction} (predicted chunk)")
        rows = [[t, *(round(float(v), 4) for v in row)] for t, row in enumerate(chunk)]
        source = "the uploaded picture" if uploaded is not None else f"the first frame of seed {seed}"
        info = f"instruction: {instruction!r}; observation: {source}; {len(chunk)} actions in {seconds:.2f} s"
        return image, plot, rows, info, imagined

    def _first_frames_batch(self, task: str, seeds: list[int]) -> list[dict]:
        first = not self._first_frame_envs
        if task not in self._first_frame_envs:
            import gymnasium

            self._first_frame_envs[task] = gymnasium.make(_robot_envs().ENV_ID, task=task, image_size=self.image_size)
        frames = [self._first_frame_envs[task].reset(seed=seed)[0] for seed in seeds]
        if first:  # after the first render set GL up: at exit this runs before the GL tear-down
            atexit.register(_close_all, self._first_frame_envs)
        return frames

    def _chunks_batch(self, steps: int, requests: list[tuple]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        images, instructions, states = zip(*requests)
        out = self.pipe.act(list(images), list(instructions), state=np.stack(states) if self.pipe.uses_state else None,
                            steps=steps, foresight_steps=FORESIGHT_STEPS if self.foresight else 0,
                            return_trajectory=True)
        imagined = [np.asarray(frame.convert("RGB")) for frame in out.extras.get("future", [])] or [None] * len(images)
        return list(zip(out.outputs, imagined))

    def episode(self, task: str, seed: int = ROBOT_SEED, max_steps: int = 60, steps: int = 1):
        """A short closed-loop episode (execute the chunk, re-plan): (frame strip, status text)."""
        envs = self._check_task(task)
        seed = _whole("seed", seed, 0, MAX_SEED)
        max_steps = _whole("max_steps", max_steps, 1, 500)
        steps = _whole("steps", steps, 1, self.action_tokens)
        import gymnasium

        with self._lock:
            env = gymnasium.make(envs.ENV_ID, task=task, image_size=self.image_size, max_steps=max_steps)
            try:
                frames, latencies, success = self._run_episode(env, envs, seed, steps)
            finally:
                env.close()
        status = (f"{'success' if success else 'no success'} after {len(frames) - 1} steps "
                  f"({len(latencies)} chunks, {1000 * float(np.mean(latencies)):.0f} ms per chunk)")
        return frame_strip(frames), status

    def _run_episode(self, env, envs, seed: int, steps: int) -> tuple[list[np.ndarray], list[float], bool]:
        """Decode a chunk from the current observation, execute all of it, repeat until success or the step cap:
        (every frame from the reset on, seconds per chunk, success)."""
        obs, _ = env.reset(seed=seed)
        frames, latencies = [obs[envs.IMAGE_KEY]], []
        while True:
            start = time.perf_counter()
            state = obs[envs.STATE_KEY][None] if self.pipe.uses_state else None
            chunk = self.pipe.act([obs[envs.IMAGE_KEY]], [obs[envs.INSTRUCTION_KEY]], state=state, steps=steps)[0]
            latencies.append(time.perf_counter() - start)
            for action in chunk:
                obs, _, terminated, truncated, _ = env.step(action)
                frames.append(obs[envs.IMAGE_KEY])
                if terminated or truncated:
                    return frames, latencies, bool(terminated)


def _close_all(envs: dict[str, Any]) -> None:
    for env in envs.values():
        env.close()
    envs.clear()


def build_app(pipeline, examples: bool = True, title: str = "unimask demo", max_batch: int = 16,
              max_pending: int = 64):
    """The Gradio Blocks app for a `UnifiedPipeline`; call `.launch(server_name="127.0.0.1")` on it. Up to
    `max_pending` requests wait at once; those of one kind and settings are served `max_batch` at a time."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    from unimask.training.envs import MT10_TASKS

    functions = DemoFunctions(pipeline, max_batch=max_batch, max_pending=max_pending)

    def friendly(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except (InputError, DemoBusyError) as err:  # our own input checks and the pipeline's, a full queue
                raise gr.Error(str(err)) from None
        return wrapper

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown("# unimask\nOne masked discrete-diffusion Transformer: it captions images, draws images from "
                    "text and writes robot action chunks, all by unmasking tokens.")
        with gr.Tab("Caption"):
            with gr.Row():
                image = gr.Image(type="filepath", label="image", image_mode="RGB")
                with gr.Column():
                    caption_steps = gr.Slider(1, functions.caption_length, value=functions.caption_length, step=1,
                                              label="steps (one per caption token is the most careful)")
                    caption_out = gr.Textbox(label="caption")
                    caption_button = gr.Button("Caption", variant="primary")
            if examples:
                pictures = example_images(functions.image_size)
                gr.Examples([[_example_file(picture, i)] for i, (_, picture) in enumerate(pictures)], inputs=[image],
                            label="examples: " + "; ".join(label for label, _ in pictures))
            # preprocess=False: the upload reaches `_rgb` as a file, which explains a file that is not a picture.
            caption_button.click(friendly(functions.caption), [image, caption_steps], caption_out,
                                 api_name="caption", concurrency_limit=max_pending, preprocess=False)
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(value="the digit seven", label="prompt", max_length=MAX_PROMPT_CHARS)
            with gr.Row():
                t2i_steps = gr.Slider(1, min(64, functions.image_tokens), value=min(12, functions.image_tokens),
                                      step=1, label="steps")
                guidance = gr.Slider(0, 10, value=3.0, step=0.5, label="guidance (1 = off)")
                seed = gr.Textbox(value="0", label=f"seed (a whole number, 0 to {MAX_SEED})")
            generate_button = gr.Button("Generate", variant="primary")
            with gr.Row():
                result = gr.Image(label="image")
                gallery = gr.Gallery(label="denoising steps (the image after each unmasking step)", columns=6)
            t2i_info = gr.Textbox(label="run", interactive=False)
            generate_button.click(friendly(functions.text_to_image), [prompt, t2i_steps, guidance, seed],
                                  [result, gallery, t2i_info], api_name="text_to_image",
                                  concurrency_limit=max_pending)
        with gr.Tab("Robot actions"):
            with gr.Row():
                task = gr.Dropdown(list(MT10_TASKS), value="drawer-open-v3", label="Meta-World MT10 task")
                robot_seed = gr.Textbox(value=str(ROBOT_SEED),
                                        label="episode seed (>= 100000000: never in the training data)")
                act_steps = gr.Slider(1, min(16, functions.action_tokens), value=1,
                                      step=1, label="decoding steps per chunk")
            upload = gr.Image(type="filepath", label="observation (optional: replaces the episode's first frame)",
                              image_mode="RGB")
            decode_button = gr.Button("Decode actions", variant="primary")
            with gr.Row():
                seen = gr.Image(label="observation the model saw")
                imagined = gr.Image(label="the frame it imagines ahead (foresight checkpoints)",
                                    visible=functions.foresight)
                plot = gr.Image(label="action chunk")
            table = gr.Dataframe(headers=["step", *functions.action_names], label="actions in real units")
            act_info = gr.Textbox(label="run", interactive=False)
            decode_button.click(friendly(functions.actions), [task, robot_seed, upload, act_steps],
                                [seen, plot, table, act_info, imagined], api_name="actions",
                                concurrency_limit=max_pending,
                                preprocess=False)
            with gr.Row():
                max_steps = gr.Slider(5, 200, value=60, step=5, label="episode length cap (actions)")
                episode_button = gr.Button("Run a short closed-loop episode")
            strip = gr.Image(label="closed-loop episode (frames from start to end)")
            status = gr.Textbox(label="result", interactive=False)
            episode_button.click(friendly(functions.episode), [task, robot_seed, max_steps, act_steps],
                                 [strip, status], api_name="episode")
    app.queue(max_size=max_pending)
    return app


def _example_file(picture: np.ndarray, index: int) -> str:
    """An example picture saved as a PNG file (the image inputs take files, so an upload that is not a picture gets a
    clear message rather than a failure inside gradio)."""
    import tempfile

    from PIL import Image

    path = Path(tempfile.gettempdir()) / f"unimask-demo-example-{os.getpid()}-{index}.png"
    Image.fromarray(picture).save(path)
    return str(path)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="Gradio demo: caption, text to image, robot actions")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                        help=f"exported model folder (default: {DEFAULT_CHECKPOINT}, written by `unimask quickstart`)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="requests of one kind served by one model call (default 16; 1: one at a time)")
    parser.add_argument("--max-pending", type=int, default=64, help="requests waiting at most (default 64)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    for flag, value, low, high in (("--port", args.port, 1, 65535), ("--max-batch", args.max_batch, 1, 256),
                                   ("--max-pending", args.max_pending, 1, 10_000)):
        check_number(flag, value, low, high, integer=True, error=ConfigError)
    from unimask import UnifiedPipeline

    try:
        pipeline = UnifiedPipeline.from_pretrained(args.checkpoint)
    except MissingFileError as err:
        raise MissingFileError(f"{err} Run `unimask quickstart` first, or pass --checkpoint DIR with a folder written "
                               "by `unimask export`.", key="--checkpoint") from None
    app = build_app(pipeline, max_batch=args.max_batch, max_pending=args.max_pending)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"unimask demo: binding to {args.host}: anyone who can reach this machine can use the demo.")
    try:
        app.launch(server_name=args.host, server_port=args.port)
    except OSError as err:
        print(f"unimask demo: cannot serve on {args.host}:{args.port} ({err}); pick another --port.", file=sys.stderr)
        return 1
    return 0
