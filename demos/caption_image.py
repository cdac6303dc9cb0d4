"""Caption images with a unimask checkpoint.

    python -m unimask.demos.caption_image --checkpoint runs/quickstart/model digit.png scene.jpg

Any picture size works: the image tokenizer center-crops to a square and resizes to the checkpoint's resolution.
"""

from __future__ import annotations

import argparse

from PIL import Image

from unimask import UnifiedPipeline


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model", help="exported model folder")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising steps (default: one per caption token, the most careful)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the sampler (captions are reproducible)")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(argv)

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    images = [Image.open(path).convert("RGB") for path in args.images]
    # One batched call: every image is captioned in the same denoising loop.
    captions = pipe.caption(images, steps=args.steps, seed=args.seed)
    for path, caption in zip(args.images, captions):
        print(f"{path}: {caption}")
    return captions


if __name__ == "__main__":
    main()
