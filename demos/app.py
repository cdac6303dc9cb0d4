"""`unimask demo --checkpoint DIR`: a Gradio app with three tabs (caption, text to image, robot actions).

The tab functions are plain Python (`DemoFunctions`) so they can be tested without a browser; the app only calls
the pipeline. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CHECKPOINT = "runs/quickstart/model"
MAX_PROMPT_CHARS = 200


class DemoInputError(ValueError):
    """A demo input is missing or out of range; the message is shown to the user."""


class DemoFunctions:
    """What each tab does, with input validation; `build_app` wires these to widgets."""

    def __init__(self, pipeline):
        self.pipe = pipeline

    def caption(self, image: Any, steps: int = 24) -> str:
        if image is None:
            raise DemoInputError("Upload or pick an image first.")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DemoInputError(f"The image must be RGB, got an array of shape {image.shape}.")
        return self.pipe.caption([np.ascontiguousarray(image[..., :3]).astype(np.uint8)],
                                 steps=_in_range("steps", steps, 1, 64))[0]

    def text_to_image(self, prompt: str, steps: int = 12, guidance: float = 3.0, seed: int = 0):
        """(final image, list of (image, label) for every denoising step)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise DemoInputError("Type a prompt first, e.g. 'the digit seven'.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise DemoInputError(f"The prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}.")
        out = self.pipe.text_to_image([prompt.strip()], steps=_in_range("steps", steps, 1, 64),
                                      guidance_scale=float(_in_range("guidance", guidance, 0, 20)),
                                      seed=int(seed), return_trajectory=True)
        big = lambda im: im.resize((im.width * 4, im.height * 4), 0)  # noqa: E731  (nearest: keep the pixels honest)
        steps_gallery = [(big(frame[0]), f"step {i + 1}") for i, frame in enumerate(out.trajectory_images)]
        return big(out.outputs[0]), steps_gallery

    def actions(self, task: str, seed: int = 0, observation: Any = None, steps: int = 2):
        """(plot image, table rows [step, a0..aD]) for an MT10 task's first observation or an uploaded one."""
        from unimask.training.evaluation.robot import MT10_TASKS, MetaWorldEnv

        if task not in MT10_TASKS:
            raise DemoInputError(f"Pick a task from the list ({', '.join(MT10_TASKS)}).")
        env = MetaWorldEnv(task)
        obs, _ = env.reset(seed=int(seed))
        env.close()
        image = obs["image"] if observation is None else np.asarray(observation)[..., :3].astype(np.uint8)
        state = obs["state"][None] if self.pipe.uses_state else None
        chunk = self.pipe.act([image], [obs["instruction"]], state=state, steps=_in_range("steps", steps, 1, 8))[0]
        from unimask.training.report import line_plot

        plot = line_plot({f"a{d}": [float(v) for v in chunk[:, d]] for d in range(chunk.shape[1])},
                         f"{task}: predicted action chunk")
        rows = [[i, *[round(float(v), 4) for v in row]] for i, row in enumerate(chunk)]
        return plot, rows

    def episode(self, task: str, seed: int = 0, max_steps: int = 80):
        """A short closed-loop episode: (frame strip, status text)."""
        from unimask.training.evaluation.robot import MT10_TASKS, MetaWorldEnv, rollout
        from unimask.training.evaluation.suite import pipeline_policy

        if task not in MT10_TASKS:
            raise DemoInputError(f"Pick a task from the list ({', '.join(MT10_TASKS)}).")
        env = MetaWorldEnv(task, max_steps=_in_range("max_steps", max_steps, 1, 200))
        result = rollout(pipeline_policy(self.pipe)(task), env, int(seed), record_frames=True)
        env.close()
        frames = result.frames[:: max(1, len(result.frames) // 10)][:10]
        strip = np.concatenate(frames, axis=1)
        status = f"{'success' if result.success else 'no success'} after {result.steps} steps"
        return strip, status


def _in_range(name: str, value: Any, low: float, high: float) -> Any:
    if value is None or not low <= float(value) <= high:
        raise DemoInputError(f"`{name}` must be between {low} and {high}, got {value}.")
    return int(value) if float(value).is_integer() else float(value)


def build_app(pipeline):
    import gradio as gr

    from unimask.training.evaluation.robot import MT10_TASKS

    functions = DemoFunctions(pipeline)

    def friendly(fn):
        def wrapper(*args):
            try:
                return fn(*args)
            except DemoInputError as err:
                raise gr.Error(str(err)) from None
        return wrapper

    with gr.Blocks(title="unimask demo") as app:
        gr.Markdown("# unimask: one masked-diffusion model for captions, images and robot actions")
        with gr.Tab("Caption"):
            image = gr.Image(type="numpy", label="image")
            caption_steps = gr.Slider(1, 64, value=24, step=1, label="steps")
            caption_out = gr.Textbox(label="caption")
            gr.Button("Caption").click(friendly(functions.caption), [image, caption_steps], caption_out,
                                       api_name="caption")
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(value="the digit seven", label="prompt")
            with gr.Row():
                t2i_steps = gr.Slider(1, 64, value=12, step=1, label="steps")
                guidance = gr.Slider(0, 10, value=3.0, step=0.5, label="guidance (1 = off)")
                seed = gr.Number(value=0, precision=0, label="seed")
            result = gr.Image(label="image")
            gallery = gr.Gallery(label="denoising steps", columns=8)
            gr.Button("Generate").click(friendly(functions.text_to_image), [prompt, t2i_steps, guidance, seed],
                                        [result, gallery], api_name="text_to_image")
        with gr.Tab("Robot actions"):
            task = gr.Dropdown(list(MT10_TASKS), value=MT10_TASKS[4], label="Meta-World task")
            robot_seed = gr.Number(value=100000000, precision=0, label="seed")
            observation = gr.Image(type="numpy", label="observation (optional: replaces the task's first frame)")
            act_steps = gr.Slider(1, 8, value=2, step=1, label="steps")
            plot = gr.Image(label="action chunk")
            table = gr.Dataframe(label="actions in real units (step, a0..a3)")
            gr.Button("Decode actions").click(friendly(functions.actions), [task, robot_seed, observation, act_steps],
                                              [plot, table], api_name="actions")
            strip = gr.Image(label="closed-loop episode")
            status = gr.Textbox(label="result")
            gr.Button("Run a short episode").click(friendly(functions.episode), [task, robot_seed], [strip, status],
                                                   api_name="episode")
    return app


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="Gradio demo: caption, text to image, robot actions")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="exported model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from unimask.pipeline import UnifiedPipeline

    if not Path(args.checkpoint).is_dir():
        raise SystemExit(f"checkpoint {args.checkpoint} does not exist; run `unimask quickstart` first or pass "
                         "--checkpoint DIR.")
    app = build_app(UnifiedPipeline.from_pretrained(args.checkpoint))
    app.launch(server_name=args.host, server_port=args.port)
    return 0
