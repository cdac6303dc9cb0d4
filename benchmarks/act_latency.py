"""Latency of one action chunk at batch 1: a raw 64x64 observation (+ instruction and state) to real-unit actions.

    OMP_NUM_THREADS=1 python benchmarks/act_latency.py --checkpoint runs/quickstart/model --data runs/quickstart/data

Times `UnifiedPipeline.act` on held-out MT10 frames, one at a time on one thread, with the evaluation's decoding
settings (`unimask.training.evaluation.suite.VLA_DECODING`), after a warm-up; prints the median, 90th percentile and
the share spent building the sequence (pixels, instruction, state -> tokens) and decoding (model passes -> actions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model")
    parser.add_argument("--data", default="runs/quickstart/data", help="folder holding the mt10/ dataset")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from unimask.pipeline import UnifiedPipeline
    from unimask.training.data.loader import iterate_samples
    from unimask.training.evaluation.suite import VLA_DECODING

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    samples = [s for _, s in zip(range(args.calls), iterate_samples(Path(args.data) / "mt10", "test", "vla"))]
    steps = VLA_DECODING["steps"]

    def call(sample) -> None:
        state = sample["state"][None] if pipe.uses_state else None
        pipe.act([sample["image"]], [sample["text"].stored], state=state, steps=steps)

    for sample in samples[:10]:
        call(sample)
    totals, building = [], []
    for sample in samples:
        start = time.perf_counter()
        call(sample)
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        state = [sample["state"]] if pipe.uses_state else [None]
        template = pipe.processor.template("vla")
        row = [{"image": sample["image"], "instruction": sample["text"].stored, "state": state[0]}.get(s.field)
               for s in template.condition]
        pipe.processor.sequences("vla", [[*row, None]])
        building.append(time.perf_counter() - start)
    totals_ms, building_ms = 1000 * np.array(totals), 1000 * np.array(building)
    print(f"checkpoint {args.checkpoint}: {len(totals)} calls at batch 1, {steps} decoding steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  median {np.median(totals_ms):.1f} ms, p90 {np.percentile(totals_ms, 90):.1f} ms per chunk")
    print(f"  building the sequence: median {np.median(building_ms):.1f} ms; decoding: "
          f"{np.median(totals_ms) - np.median(building_ms):.1f} ms")


if __name__ == "__main__":
    main()
