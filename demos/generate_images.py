"""Generate images from prompts, and save the denoising steps as a strip beside each image.

    python -m unimask.demos.generate_images --checkpoint runs/quickstart/model --out generated \
        "the digit seven" "a red square"

Writes generated/00.png, generated/00_steps.png (the image after each unmasking step, left to right), ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from unimask import UnifiedPipeline


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/model", help="exported model folder")
    parser.add_argument("--out", default="generated", help="output folder")
    parser.add_argument("--steps", type=int, default=12, help="unmasking steps (MaskGIT-style)")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("prompts", nargs="+")
    args = parser.parse_args(argv)

    pipe = UnifiedPipeline.from_pretrained(args.checkpoint)
    out = pipe.text_to_image(args.prompts, steps=args.steps, guidance_scale=args.guidance, seed=args.seed,
                             return_trajectory=True)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (prompt, image) in enumerate(zip(args.prompts, out.outputs)):
        image.save(folder / f"{i:02d}.png")
        frames = [step[i] for step in out.trajectory_images]  # trajectory_images: [step][prompt]
        strip = Image.new("RGB", (image.width * len(frames), image.height))
        for j, frame in enumerate(frames):
            strip.paste(frame, (j * image.width, 0))
        strip.save(folder / f"{i:02d}_steps.png")
        written.append(folder / f"{i:02d}.png")
        print(f"{prompt!r} -> {written[-1]} (+ {i:02d}_steps.png)")
    print(f"{out.forward_passes} model calls for {len(args.prompts)} prompts")
    return written


if __name__ == "__main__":
    main()
