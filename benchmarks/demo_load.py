"""The demo under load: 50 concurrent mixed requests (captions, text to image, action chunks) through gradio_client,
served one at a time (`--max-batch 1`, how the demo served before) and micro-batched (`--max-batch 16`), in one run.

    OMP_NUM_THREADS=1 python benchmarks/demo_load.py --checkpoint runs/quickstart/model

Prints requests per second and the median and maximum latency of each setting, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def load(app, requests: int, picture: str) -> dict[str, float]:
    from gradio_client import Client, handle_file

    client = Client(app.local_url, verbose=False)

    def one(i: int) -> float:
        start = time.perf_counter()
        kind = i % 3
        if kind == 0:
            client.predict(handle_file(picture), 12, api_name="/caption")
        elif kind == 1:
            prompt = f"the digit {('zero', 'one', 'two')[i // 3 % 3]}"
            client.predict(prompt, 12, 3.0, str(i), api_name="/text_to_image")
        else:
            client.predict("drawer-open-v3", str(10**8 + i), None, 2, api_name="/actions")
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        latencies = np.array(list(pool.map(one, range(requests))))
    total = time.perf_counter() - start
    return {"requests_per_s": requests / total, "median_s": float(np.median(latencies)),
            "max_s": float(latencies.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    import torch
    from PIL import Image

    from unimask.demos.app import build_app
    from unimask.training.samples import example_images
    from unimask.pipeline import UnifiedPipeline

    torch.set_num_threads(1)
    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    picture = str(Path(tempfile.mkdtemp()) / "digit.png")
    Image.fromarray(example_images(pipe.image_size or 64)[0][1]).save(picture)
    rows = {}
    for max_batch in (1, 16):
        app = build_app(pipe, examples=False, max_batch=max_batch, max_pending=max(64, args.requests))
        app.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        try:
            rows[max_batch] = load(app, args.requests, picture)
        finally:
            app.close()
    print(f"{args.requests} concurrent mixed requests (captions, text to image 12 steps, action chunks), "
          f"checkpoint {args.checkpoint}, torch threads {torch.get_num_threads()}")
    print("| serving | requests/s | median latency s | max latency s |")
    print("|---|---|---|---|")
    for max_batch, row in rows.items():
        name = "one at a time" if max_batch == 1 else f"micro-batched (up to {max_batch})"
        print(f"| {name} | {row['requests_per_s']:.2f} | {row['median_s']:.1f} | {row['max_s']:.1f} |")
    print(f"throughput ratio: {rows[16]['requests_per_s'] / rows[1]['requests_per_s']:.1f}x")


if __name__ == "__main__":
    main()
