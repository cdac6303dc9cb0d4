"""Caption images with a unimask checkpoint.

    python -m unimask.demos.caption_image --checkpoint runs/quickstart/model image1.png image2.png
"""

import argparse

from PIL import Image

from unimask import UnifiedPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model", help="exported model folder")
    parser.add_argument("--steps", type=int, default=24, help="denoising steps (one per token is the slowest)")
    parser.add_argument("images", nargs="+", help="image files (any size; center-cropped and resized)")
    args = parser.parse_args()

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    images = [Image.open(path).convert("RGB") for path in args.images]
    for path, caption in zip(args.images, pipe.caption(images, steps=args.steps)):
        print(f"{path}: {caption}")


if __name__ == "__main__":
    main()
