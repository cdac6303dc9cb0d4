"""How fast does the model learn to read the image? Digits captioning (i2t) alone, in memory, on a quickstart run.

Trains the same small model under a few settings and reports held-out digit accuracy of greedy captions every
`--eval-every` steps, so the settings can be compared at equal steps in one run:
- `paraphrase` vs `first`: a random caption paraphrase per sample vs one canonical wording of the target;
- `normal` vs `codebook`: image-code embeddings from noise vs from the VQ codebook (`init_embedding_rows`).
First it checks that the codes carry the digit at all: a 1-nearest-neighbour (Hamming distance between code grids)
and a logistic regression on one-hot codes per position, fitted on the train split, scored on held-out digits.

    OMP_NUM_THREADS=1 python benchmarks/condition_learning.py --run runs/quickstart --steps 500
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from unimask.bundle import load_bundle
from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig, MaskedDiffusionTransformer
from unimask.sampler import generate
from unimask.schedulers import make_scheduler
from unimask.sequence import collate
from unimask.training.data.loader import iterate_samples
from unimask.training.engines import TorchEngine
from unimask.training.evaluation.captions import digit_caption_accuracy, digit_in_caption
from unimask.training.step import train_step

SETTINGS = {"paraphrase+normal": ("random", "normal"), "first+normal": ("first", "normal"),
            "first+codebook": ("first", "codebook")}


def load_split(run: str, split: str) -> list[tuple[np.ndarray, list[str]]]:
    return [(np.asarray(s["image_codes"]).ravel(), s["text"].paraphrases)
            for s in iterate_samples(f"{run}/data/digits-tok", split, "i2t")]


def code_probes(run: str, eval_images: int) -> dict[str, float]:
    """Held-out digit accuracy of two classifiers that read only the VQ code grids."""
    from sklearn.linear_model import LogisticRegression

    def arrays(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        samples = load_split(run, split)[:limit]
        return np.stack([c for c, _ in samples]), np.array([digit_in_caption(t[0]) for _, t in samples])

    train_codes, train_labels = arrays("train", None)
    test_codes, test_labels = arrays("test", eval_images)
    distances = (test_codes[:, None, :] != train_codes[None, :, :]).sum(-1)
    nearest = float((train_labels[distances.argmin(1)] == test_labels).mean())
    size = int(max(train_codes.max(), test_codes.max())) + 1

    def one_hot(codes: np.ndarray) -> np.ndarray:
        out = np.zeros((len(codes), codes.shape[1] * size), dtype=np.float32)
        out[np.arange(len(codes))[:, None], np.arange(codes.shape[1]) * size + codes] = 1
        return out

    linear = LogisticRegression(max_iter=2000).fit(one_hot(train_codes), train_labels)
    return {"nearest_neighbour": nearest, "logistic_regression": float(linear.score(one_hot(test_codes), test_labels))}


def train_and_evaluate(run: str, text: str, embedding: str, args: argparse.Namespace) -> list[dict]:
    processor = load_bundle(f"{run}/model").processor
    vocab = processor.vocab
    train, test = load_split(run, "train"), load_split(run, "test")[:args.eval_images]
    labels = [digit_in_caption(texts[0]) for _, texts in test]
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = MaskedDiffusionTransformer(MaskedDiffusionConfig(vocab_size=vocab.size, d_model=args.d_model,
                                                             n_layers=args.layers, n_heads=4, max_seq_len=128))
    if embedding == "codebook":
        model.init_embedding_rows(vocab.range_of("image")[0], processor.tokenizers["image"].codebook_vectors,
                                  seed=args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = 35
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warmup) / args.steps)))
    engine = TorchEngine(model, optimizer, schedule, grad_clip=1.0, grad_accum=1, world=1, device=model.device)
    rows = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        picks = rng.integers(len(train), size=args.batch_size)
        texts = [train[i][1][int(rng.integers(len(train[i][1])))] if text == "random" else train[i][1][0]
                 for i in picks]
        batch = collate([processor.sequence("i2t", [None, t], codes=[train[i][0], None]) for i, t in zip(picks, texts)],
                        vocab.pad_id)
        train_step(engine, batch, vocab, MaskingConfig(), generator)
        if step % args.eval_every == 0:
            model.eval()
            batch = collate([processor.sequence("i2t", [None, None], codes=[codes, None]) for codes, _ in test],
                            vocab.pad_id, padding_side="left")
            scheduler = make_scheduler("text", vocab)
            with torch.no_grad():
                tokens = generate(model, batch, vocab, scheduler, num_steps=processor.length("text")).tokens
            captions = processor.decode("text", tokens)
            model.train()
            rows.append({"step": step, "accuracy": digit_caption_accuracy(captions, labels),
                         "seconds": time.perf_counter() - start})
            print(f"{text} wording + {embedding} embeddings, step {step}: held-out digit accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/quickstart", help="a quickstart run folder (data, tokenizers, model)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {list(SETTINGS)}")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_condition_learning.json")
    args = parser.parse_args()
    probes = code_probes(args.run, args.eval_images)
    print(f"codes alone: 1-NN {probes['nearest_neighbour']:.3f}, logistic regression "
          f"{probes['logistic_regression']:.3f} held-out digit accuracy", flush=True)
    results = {}
    for name in filter(None, args.settings.split(",")):
        if name not in SETTINGS:
            raise SystemExit(f"unknown setting {name!r}; choose from {list(SETTINGS)}.")
        results[name] = train_and_evaluate(args.run, *SETTINGS[name], args)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "code_probes": probes, "results": results}, f, indent=2)
    if not results:
        return
    print("| setting | " + " | ".join(f"step {r['step']}" for r in next(iter(results.values()))) + " |")
    for name, rows in results.items():
        print(f"| {name} | " + " | ".join(f"{r['accuracy']:.3f}" for r in rows) + " |")


if __name__ == "__main__":
    main()
