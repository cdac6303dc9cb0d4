"""The quickstart report: report.md + report.json + pictures, all made from the run's own outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimask.atomic import atomic_write_text

def _pictures(out: Path, pictures: Path) -> dict[str, str]:
    """Loss curves, a denoising strip, an action plot (predicted vs expert) and a closed-loop frame strip."""
    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.envs.gym import MetaWorldEnv
    from unimask.training.evaluation.robot import eval_seeds, rollout
    from unimask.training.evaluation.suite import T2I_DECODING, PipelinePolicy
    from unimask.training.plots import action_comparison_plot, frame_strip, loss_plot

    made: dict[str, str] = {}
    metrics_path = out / "train" / "metrics.jsonl"
    if metrics_path.is_file():
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        tasks = sorted({k for r in rows for k in r if k.startswith("loss/")})
        series = {"loss": [r["loss"] for r in rows], **{t: [r.get(t, np.nan) for r in rows] for t in tasks}}
        loss_plot(series, "training loss (every log step)", [r["step"] for r in rows]).save(pictures / "loss.png")
        made["loss curves"] = "loss.png"
    pipe = UnifiedPipeline.from_pretrained(out / "model")
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
    title = f"model vs expert: {samples[0]['text']}"
    action_comparison_plot(samples[0]["action"], predicted[0], names, title).save(pictures / "actions.png")
    made["action chunk (model vs expert)"] = "actions.png"

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
