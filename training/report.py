"""The quickstart report: report.md + report.json + pictures, all made from the run's own outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from unimask.atomic import atomic_write_text

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_plot(series: dict[str, list[float]], title: str, width: int = 480, height: int = 240) -> Image.Image:
    """A plain line chart drawn with PIL (no plotting library needed)."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 44, 22, width - 10, height - 20
    values = [v for ys in series.values() for v in ys if np.isfinite(v)]
    if not values:
        return image
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    draw.text((left, 4), title, fill="black")
    draw.text((2, top), f"{hi:.2f}", fill="black")
    draw.text((2, bottom - 10), f"{lo:.2f}", fill="black")
    for index, (name, ys) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        n = max(len(ys) - 1, 1)
        points = [(left + (right - left) * i / n, bottom - (bottom - top) * (y - lo) / (hi - lo)) for i, y in enumerate(ys)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        draw.text((right - 110, top + 4 + 12 * index), name, fill=color)
    return image


def _strip(images: list, scale: int = 2) -> Image.Image:
    images = [im.convert("RGB") if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    w, h = images[0].size
    strip = Image.new("RGB", (w * len(images), h))
    for i, im in enumerate(images):
        strip.paste(im, (i * w, 0))
    return strip.resize((strip.width * scale, strip.height * scale), Image.NEAREST)


def _pictures(out: Path, pictures: Path) -> dict[str, str]:
    """Loss curves, a denoising strip, an action plot (predicted vs expert) and a closed-loop frame strip."""
    from unimask.demos.plots import action_chunk_plot
    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.envs.metaworld import MetaWorldEnv
    from unimask.training.evaluation.robot import eval_seeds, rollout
    from unimask.training.evaluation.suite import T2I_DECODING, pipeline_policy

    made: dict[str, str] = {}
    metrics_path = out / "train" / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        tasks = sorted({k for r in rows for k in r if k.startswith("loss/")})
        series = {"loss": [r["loss"] for r in rows], **{t: [r.get(t, np.nan) for r in rows] for t in tasks}}
        line_plot(series, "training loss (every log step)").save(pictures / "loss.png")
        made["loss curves"] = "loss.png"
    pipe = UnifiedPipeline.from_pretrained(out / "model")
    result = pipe.text_to_image(["the digit seven", "a red circle on the left"], seed=0, return_trajectory=True,
                                **T2I_DECODING)
    for row, name in enumerate(("denoise_digit.png", "denoise_shapes.png")):
        _strip([frame[row] for frame in result.trajectory_images]).save(pictures / name)
    made["denoising (digit)"] = "denoise_digit.png"
    made["denoising (shapes)"] = "denoise_shapes.png"

    samples = [s for _, s in zip(range(4), iterate_samples(out / "data" / "mt10", split="test", task="vla"))]
    state = np.stack([s["state"] for s in samples]) if pipe.uses_state else None
    predicted = pipe.act([s["image"] for s in samples], [s["text"] for s in samples], state=state)
    # One panel per action dimension: dimensions differ in scale, and a shared axis flattens the small ones.
    panels = [action_chunk_plot(np.stack([samples[0]["actions"][:, d], predicted[0, :, d]], axis=1),
                                ["expert", "model"], f"dimension {d}" + (f" - {samples[0]['text']}" if d == 0 else ""),
                                size=(480, 150))
              for d in range(predicted.shape[2])]
    chart = Image.new("RGB", (480, 150 * len(panels)), "white")
    for d, panel in enumerate(panels):
        chart.paste(panel, (0, 150 * d))
    chart.save(pictures / "actions.png")
    made["action chunk (model vs expert)"] = "actions.png"

    env = MetaWorldEnv("drawer-open-v3")
    episode = rollout(pipeline_policy(pipe)("drawer-open-v3"), env, eval_seeds("drawer-open-v3", 1)[0],
                      record_frames=True)
    env.close()
    frames = episode.frames[:: max(1, len(episode.frames) // 12)][:12]
    _strip(frames).save(pictures / "episode.png")
    made[f"closed-loop drawer-open ({'success' if episode.success else 'failure'}, {episode.steps} steps)"] = "episode.png"
    return made


def write_report(out: str | Path, results: dict[str, Any], timings: dict[str, float], mode: str,
                 plan: dict[str, Any], seconds: float) -> Path:
    from unimask.training.evaluation.suite import markdown_table

    out = Path(out)
    pictures = out / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    for name in ("t2i_digits.png", "t2i_shapes.png"):
        if (out / "eval" / name).is_file():
            (pictures / name).write_bytes((out / "eval" / name).read_bytes())
    made = _pictures(out, pictures)
    captions = results.get("caption", {}).get("examples", [])
    lines = [f"# unimask quickstart report ({mode} mode)", "",
             f"Total wall time: {seconds / 60:.1f} min (this invocation; stages done earlier are skipped).", "",
             "## Results (held-out data)", "", markdown_table(results), "## Stage timings", "",
             "| stage | seconds |", "|---|---|", *[f"| {k} | {v:.0f} |" for k, v in timings.items()], "",
             "## Pictures", ""]
    lines += ["- generated digits: ![](pictures/t2i_digits.png)", "- generated shapes: ![](pictures/t2i_shapes.png)"]
    lines += [f"- {title}: ![](pictures/{name})" for title, name in made.items()]
    lines += ["", "## Captions of held-out digits", "", "| reference | generated |", "|---|---|"]
    lines += [f"| {c['reference']} | {c['caption']} |" for c in captions]
    lines += ["", "## Plan", "", "```json", json.dumps(plan, indent=2), "```", ""]
    atomic_write_text(out / "report.json", json.dumps({"mode": mode, "results": results, "timings": timings,
                                                       "plan": plan, "seconds": seconds}, indent=2))
    return atomic_write_text(out / "report.md", "\n".join(lines))
