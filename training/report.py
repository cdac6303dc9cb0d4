"""The quickstart report: report.md + report.json + pictures, all made from the run's own outputs.

    unimask report --run runs/quickstart                                 # the report stage again
    unimask report --run runs/quickstart --hero docs/images/hero.png     # and the README's picture

`RUN/pictures/hero.png` shows what the one model does: images it drew under their prompts, and held-out pictures
over the captions it wrote for them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimask.atomic import atomic_write_text

HERO = "hero.png"


def hero_picture(pipe: Any) -> Image.Image:
    """Text to image (three digits and two shapes scenes, each under its prompt) above captioning (three held-out
    digit scans and two shapes scenes, each over the caption the model wrote), decoded as the evaluation decodes."""
    from unimask.training.evaluation.suite import T2I_DECODING
    from unimask.training.plots import captioned_grid
    from unimask.training.samples import digit_prompts, digit_scans, shapes_scenes

    size = pipe.image_size or 64
    prompts = digit_prompts((0, 3, 7)) + [caption for caption, _ in shapes_scenes(2, size, seed=1)]
    drawn = [np.asarray(image.convert("RGB")) for image in pipe.text_to_image(prompts, seed=0, **T2I_DECODING)]
    pictures = [picture for _, picture in digit_scans((2, 5, 9), size) + shapes_scenes(2, size, seed=2)]
    captions = pipe.caption(pictures)
    return captioned_grid(drawn + pictures, [f"prompt: {p}" for p in prompts] + [f"caption: {c}" for c in captions],
                          columns=len(prompts))


def foresight_picture(pipe: Any, mt10: Path, count: int = 6, steps: int = 4) -> Image.Image:
    """Held-out observations of a foresight policy: the frame it imagines k steps ahead (top row, decoded in `steps`
    MaskGIT steps) above the frame the expert's demonstration reached (bottom row), under each instruction."""
    from unimask.modality import decode_image, decode_npy
    from unimask.training.data.format import read_raw, resolve_shards
    from unimask.training.plots import captioned_grid

    raws = [raw for raw, _ in zip(read_raw(resolve_shards(mt10, "test")[0]), range(count))]
    frames = [decode_image(raw["png"]) for raw in raws]
    instructions = [raw["txt"].decode() for raw in raws]
    state = np.stack([decode_npy(raw["state.npy"]) for raw in raws]) if pipe.uses_state else None
    imagined = pipe.act(frames, instructions, state=state, foresight_steps=steps, return_trajectory=True).extras["future"]
    real = [decode_image(raw["future.png"]) for raw in raws]
    size = pipe.image_size or 64
    pictures = [np.asarray(image.convert("RGB").resize((size, size))) for image in imagined] + real
    return captioned_grid(pictures, [f"imagined: {text}" for text in instructions] + ["real"] * len(real),
                          columns=len(raws))


def draw_pictures(out: str | Path) -> dict[str, str]:
    """Every picture of the report into `out/pictures`, from the run's exported model (`out/model`), its data, its
    training metrics and its evaluation's image grids: {title: file name}."""
    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.envs.gym import MetaWorldEnv
    from unimask.training.evaluation.robot import eval_seeds, rollout
    from unimask.training.evaluation.suite import T2I_DECODING, PipelinePolicy
    from unimask.training.plots import action_comparison_plot, frame_strip, loss_plot

    out = Path(out)
    pictures = out / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    for title, name in (("generated digits", "t2i_digits.png"), ("generated shapes", "t2i_shapes.png")):
        if (out / "eval" / name).is_file():
            shutil.copyfile(out / "eval" / name, pictures / name)
            made[f"{title} (evaluation, each under its prompt)"] = name
    metrics_path = out / "train" / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        tasks = sorted({k for r in rows for k in r if k.startswith("loss/")})
        series = {"loss": [r["loss"] for r in rows], **{t: [r.get(t, np.nan) for r in rows] for t in tasks}}
        loss_plot(series, "training loss (every log step)", [r["step"] for r in rows]).save(pictures / "loss.png")
        made["loss curves"] = "loss.png"
    pipe = UnifiedPipeline.from_pretrained(out / "model")
    hero_picture(pipe).save(pictures / HERO)
    made["what the model does: images under their prompts, captions under held-out pictures"] = HERO
    result = pipe.text_to_image(["the digit seven", "a red circle on the left"], seed=0, return_trajectory=True,
                                **T2I_DECODING)
    for row, name in enumerate(("denoise_digit.png", "denoise_shapes.png")):
        steps = [frame[row] for frame in result.trajectory_images]
        Image.fromarray(frame_strip(steps, max_frames=len(steps), scale=2)).save(pictures / name)
    made["denoising (digit)"] = "denoise_digit.png"
    made["denoising (shapes)"] = "denoise_shapes.png"

    samples = [s for _, s in zip(range(4), iterate_samples(out / "data" / "mt10", split="test", task="vla"))]
    state = np.stack([s["state"] for s in samples]) if pipe.uses_state else None
    predicted = pipe.act([s["image"] for s in samples], [s["text"].stored for s in samples], state=state)
    names = [f"dimension {d}" for d in range(predicted.shape[2])]
    title = f"model vs expert: {samples[0]['text'].stored}"
    action_comparison_plot(samples[0]["action"], predicted[0], names, title).save(pictures / "actions.png")
    made["action chunk (model vs expert)"] = "actions.png"

    if "future" in {segment.field for segment in pipe.processor.template("vla").extra_targets}:
        foresight_picture(pipe, out / "data" / "mt10").save(pictures / "foresight.png")
        made["foresight: the frame the policy imagines k steps ahead (top) and the real one (bottom)"] = "foresight.png"

    env = MetaWorldEnv("drawer-open-v3")
    episode = rollout(PipelinePolicy(pipe)("drawer-open-v3"), env, eval_seeds("drawer-open-v3", 1)[0],
                      record_frames=True)
    env.close()
    Image.fromarray(frame_strip(episode.frames, max_frames=12, scale=2)).save(pictures / "episode.png")
    made[f"closed-loop drawer-open ({'success' if episode.success else 'failure'}, {episode.steps} steps)"] = "episode.png"
    return made


def write_report(out: str | Path, results: dict[str, Any], timings: dict[str, float], mode: str,
                 plan: dict[str, Any], seconds: float) -> Path:
    from unimask.training.evaluation.suite import markdown_table

    out = Path(out)
    made = draw_pictures(out)
    captions = results.get("caption", {}).get("examples", [])
    lines = [f"# unimask quickstart report ({mode} mode)", "",
             f"Total wall time: {seconds / 60:.1f} min (this invocation; stages done earlier are skipped).", "",
             "## Results (held-out data)", "", markdown_table(results), "## Stage timings", "",
             "| stage | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in timings.items()], "",
             "## Pictures", ""]
    lines += [f"- {title}: ![](pictures/{name})" for title, name in made.items()]
    lines += ["", "## Captions of held-out digits", "", "| reference | generated |", "|---|---|"]
    lines += [f"| {c['reference']} | {c['caption']} |" for c in captions]
    lines += ["", "## Plan", "", "```json", json.dumps(plan, indent=2), "```", ""]
    atomic_write_text(out / "report.json", json.dumps({"mode": mode, "results": results, "timings": timings,
                                                       "plan": plan, "seconds": seconds}, indent=2))
    return atomic_write_text(out / "report.md", "\n".join(lines))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="a quickstart run's report again: its pictures (the README's hero "
                                                  "among them) from its exported model, and report.md")
    parser.add_argument("--run", default="runs/quickstart", help="run folder written by `unimask quickstart`")
    parser.add_argument("--hero", default="", help="also copy the hero picture here, e.g. docs/images/hero.png")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unimask.bundle import SETTINGS_FILE

    run = Path(args.run)
    if not (run / "model" / SETTINGS_FILE).is_file():
        print(f"unimask report: {run} has no exported model ({run / 'model' / SETTINGS_FILE}); give a folder written "
              "by `unimask quickstart`.", file=sys.stderr)
        return 2
    saved = run / "report.json"
    if saved.is_file():
        print(f"report: {write_report(run, **json.loads(saved.read_text()))}")
    else:
        print(f"pictures: {', '.join(draw_pictures(run).values())} in {run / 'pictures'} (no report.json: report.md "
              "is left as it is)")
    if args.hero:
        Path(args.hero).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "pictures" / HERO, args.hero)
        print(f"hero picture: {args.hero}")
    return 0
