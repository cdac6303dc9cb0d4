"""The evaluation suite behind `unimask eval`: every figure in README.md and docs/results.md comes from these.

Each task reads the held-out (`test`) split of a dataset folder written by `unimask data ...`, runs the pipeline
and returns a dict of metrics with the settings that produced them:

- caption: digit accuracy (the right digit named) on digits; attribute accuracy on shapes captions.
- t2i: fraction of generated digits the independent judge assigns to the prompted class.
- shapes: colour / shape / count / position read from generated images by colour segmentation (GenEval-style).
- vla: closed-loop Meta-World MT10 success (see `unimask.training.evaluation.robot`).
- clip: CLIP scores of generated images (prompt vs image) and of generated captions (real image vs caption), beside
  the same CLIP's scores of real pairs and of mismatched pairs (see `unimask.training.evaluation.clip`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from unimask.atomic import atomic_write_text
from unimask.training.data.format import read_card

TASKS = ("caption", "t2i", "shapes", "vla", "clip")
# Image decoding for every text-to-image metric: 12 MaskGIT steps, guidance 3, MaskGIT's sampling temperatures.
# Sharper sampling draws cleaner digits but empties shapes scenes (`benchmarks/t2i_decoding.py` measures both), so
# the metrics keep the defaults rather than a setting tuned to one of them. Keyword arguments override it.
T2I_DECODING = {"steps": 12, "guidance_scale": 3.0, "temperature": 1.0, "choice_temperature": 4.5}
# Closed-loop robot evaluation: decoding steps per action chunk and actions executed before re-planning. One step
# from the fully masked chunk had the lowest action error and the highest success (0.46 vs 0.38 with 2 steps, 0.08
# with 8; executing 4 or 2 actions did not beat 8): `benchmarks/vla_decoding.py`, docs/results.md "Choosing how to
# decode actions". Each action is the mean of its predicted bins, which had a lower action error than the most likely
# bin.
VLA_DECODING = {"steps": 1, "execute_steps": 8, "estimate": "mean"}


def iter_test_samples(directory: str | Path, limit: int | None = None, split: str = "test") -> Iterator[dict[str, Any]]:
    """Decoded samples of a dataset split in shard order (keys as `unimask.training.data.decode_sample`)."""
    from unimask.training.data.loader import iterate_samples

    for count, sample in enumerate(iterate_samples(directory, split=split, task="i2t")):
        if limit is not None and count >= limit:
            return
        yield sample


def _batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def evaluate_captions(pipeline, data_dir: str | Path, limit: int = 200, batch_size: int = 32,
                      **generate: Any) -> dict[str, Any]:
    """Caption held-out images; digits: exact digit accuracy, shapes: attribute accuracy of the caption."""
    from .captions import digit_caption_accuracy, shapes_caption_attributes

    card = read_card(data_dir)
    samples = list(iter_test_samples(data_dir, limit))
    captions: list[str] = []
    for batch in _batched(samples, batch_size):
        captions += pipeline.caption([s["image"] for s in batch], **generate)
    examples = [{"key": s["key"], "caption": c, "reference": s["text"].stored} for s, c in zip(samples[:8], captions)]
    if card["source"] == "digits":
        accuracy = digit_caption_accuracy(captions, [s["meta"]["label"] for s in samples])
        return {"dataset": "digits", "n": len(samples), "digit_accuracy": accuracy, "examples": examples}
    if card["source"] == "shapes":
        scores = [shapes_caption_attributes(c, s["meta"], card["colors"], card["shapes"])
                  for c, s in zip(captions, samples)]
        result = {f"{k}_accuracy": float(np.mean([r[k] for r in scores])) for k in scores[0]}
        return {"dataset": "shapes", "n": len(samples), **result, "examples": examples}
    raise ValueError(f"caption evaluation supports the digits and shapes datasets, got {card['source']!r}.")


def evaluate_digits_t2i(pipeline, data_dir: str | Path, judge, per_class: int = 10, batch_size: int = 20,
                        seed: int = 0, **generate: Any) -> dict[str, Any]:
    """Generate `per_class` images for each digit from held-out captions; the judge's agreement with the prompt."""
    samples = list(iter_test_samples(data_dir))
    prompts, labels = [], []
    for digit in range(10):
        captions = [s["text"].stored for s in samples if s["meta"]["label"] == digit]
        if not captions:
            raise ValueError(f"the test split of {data_dir} has no image of digit {digit}.")
        prompts += [captions[i % len(captions)] for i in range(per_class)]
        labels += [digit] * per_class
    decoding = {**T2I_DECODING, **generate}
    images = []
    for index, batch in enumerate(_batched(prompts, batch_size)):
        images += pipeline.text_to_image(batch, seed=seed + index, **decoding)
    arrays = np.stack([np.asarray(im.convert("RGB")) for im in images])
    predicted = judge.predict(arrays)
    accuracy = float((predicted == np.asarray(labels)).mean())
    return {"dataset": "digits", "n": len(prompts), "judge_accuracy": accuracy, "decoding": decoding,
            "images": arrays, "prompts": prompts}


def evaluate_shapes_t2i(pipeline, data_dir: str | Path, limit: int = 100, batch_size: int = 20, seed: int = 0,
                        **generate: Any) -> dict[str, Any]:
    """Generate an image per held-out shapes caption; read the scene back by colour segmentation and score it."""
    from .shapes_reader import read_scene, score_scene

    card = read_card(data_dir)
    samples = list(iter_test_samples(data_dir, limit))
    decoding = {**T2I_DECODING, **generate}
    images = []
    for index, batch in enumerate(_batched(samples, batch_size)):
        images += pipeline.text_to_image([s["text"].stored for s in batch], seed=seed + index, **decoding)
    arrays = np.stack([np.asarray(im.convert("RGB")) for im in images])
    scores = [score_scene(read_scene(a, card["colors"], card["shapes"]), s["meta"]) for a, s in zip(arrays, samples)]
    result = {f"{k}_accuracy": float(np.mean([r[k] for r in scores])) for k in scores[0]}
    return {"dataset": "shapes", "n": len(samples), **result, "decoding": decoding, "images": arrays,
            "prompts": [s["text"].stored for s in samples]}


def evaluate_clip(pipeline, data_dir: str | Path, scorer, limit: int = 100, batch_size: int = 20, seed: int = 0,
                  **generate: Any) -> dict[str, Any]:
    """Mean CLIP scores on `limit` held-out pairs: generated image vs its prompt (t2i) and real image vs the generated
    caption (caption), beside the same CLIP's floor and ceiling (`clip.reference_scores`)."""
    from .clip import pair_scores, reference_scores

    card = read_card(data_dir)
    samples = list(iter_test_samples(data_dir, limit))
    decoding = {**T2I_DECODING, **generate}
    generated, captions = [], []
    for index, batch in enumerate(_batched(samples, batch_size)):
        generated += pipeline.text_to_image([s["text"].stored for s in batch], seed=seed + index, **decoding)
        captions += pipeline.caption([s["image"] for s in batch])
    real = scorer.embed_images([s["image"] for s in samples])
    prompts = scorer.embed_texts([s["text"].stored for s in samples])
    return {"dataset": card["source"], "n": len(samples), "clip": str(scorer.source), "decoding": decoding,
            "t2i_clip_score": float(pair_scores(scorer.embed_images(generated), prompts).mean()),
            "caption_clip_score": float(pair_scores(real, scorer.embed_texts(captions)).mean()),
            **reference_scores(real, prompts)}


class PipelinePolicy:
    """A closed-loop policy factory: `act` of a pipeline on the current frame, instruction and state. Give the
    pipeline, or a checkpoint folder (loaded once per process: the factory can be sent to worker processes)."""

    def __init__(self, pipeline: Any, **generate: Any):
        self.source = pipeline
        self.generate = generate
        self._pipeline = None if isinstance(pipeline, (str, Path)) else pipeline

    def __getstate__(self) -> dict[str, Any]:
        if isinstance(self.source, (str, Path)):
            return {"source": self.source, "generate": self.generate, "_pipeline": None}
        raise TypeError("a PipelinePolicy of an in-memory pipeline cannot go to another process; give the "
                        "checkpoint folder instead.")

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            import torch

            from unimask.pipeline import UnifiedPipeline

            torch.set_num_threads(1)
            self._pipeline = UnifiedPipeline.from_pretrained(self.source)
        return self._pipeline

    def __call__(self, task: str):
        from unimask.training.envs.gym import IMAGE_KEY, INSTRUCTION_KEY, STATE_KEY

        pipeline = self.pipeline

        def policy(obs: dict[str, Any], executed: np.ndarray | None = None) -> np.ndarray:
            state = obs[STATE_KEY][None] if pipeline.uses_state else None
            return pipeline.act([obs[IMAGE_KEY]], [obs[INSTRUCTION_KEY]], state=state,
                                executed=None if executed is None else executed[None], **self.generate)[0]

        return policy


def evaluate_vla(pipeline, episodes: int = 5, tasks: tuple[str, ...] | None = None, seeds: list[int] | None = None,
                 image_size: int = 64, camera: str = "front", execute_steps: int | None = None, workers: int = 1,
                 delay: int = 0, inpaint: bool = False, **generate: Any) -> dict[str, Any]:
    """Closed-loop MT10 success of the pipeline's `act`, `episodes` per task (`pipeline`: a pipeline, or a checkpoint
    folder, which `workers > 1` needs); `delay` and `inpaint` simulate asynchronous real-time chunking
    (`robot.rollout`)."""
    from .robot import MT10_TASKS, eval_seeds, evaluate_policy

    tasks = tasks or MT10_TASKS
    seed_map = None
    if seeds:
        seed_map = {task: [s + MT10_TASKS.index(task) * 10**4 for s in seeds] for task in tasks}
    result = evaluate_policy(PipelinePolicy(pipeline, **generate), tasks=tasks, episodes=episodes,
                             seeds=seed_map, image_size=image_size, camera=camera, execute_steps=execute_steps,
                             workers=workers, delay=delay, inpaint=inpaint)
    result["default_seeds"] = seeds is None
    if seeds is None:
        result["seed_rule"] = f"eval_seeds(task, {episodes}) = {eval_seeds(tasks[0], 1)[0]} + task_index * 10**4 + i"
    return result


def markdown_table(results: dict[str, Any]) -> str:
    """A results table: one row per metric, as docs/results.md shows it."""
    rows = ["| task | dataset | metric | value | n |", "|---|---|---|---|---|"]
    for task, result in results.items():
        if not isinstance(result, dict):
            continue
        for key, value in result.items():
            if (key.endswith(("accuracy", "clip_score")) or key == "average_success") and isinstance(value, float):
                n = result.get("n")
                shown = f"{value:.2f}" if key.endswith("clip_score") else f"{value:.3f}"
                rows.append(f"| {task} | {result.get('dataset', 'mt10')} | {key} | {shown} | {n} |")
    return "\n".join(rows) + "\n"


def save_results(results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `results.json` (arrays dropped) and `results.md`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if not isinstance(v, np.ndarray)}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, (np.floating, np.integer)):
            return value.item()
        return value

    json_path = atomic_write_text(out_dir / "results.json", json.dumps(plain(results), indent=2))
    md_path = atomic_write_text(out_dir / "results.md", markdown_table(results))
    return json_path, md_path
