"""Loader throughput: samples/s with images VQ-encoded on the fly vs pre-tokenized codes, on this machine.

Measured in one run, one process, one thread (`OMP_NUM_THREADS=1`, `num_workers=0` unless `--workers`):
  decode only   SampleStream: tar reading + PNG decoding + validation (the raw-sample stage)
  raw images    MixedDataset with t2i + i2t streams: decode, VQ encode (batched), text BPE, templates, collate
  pre-tokenized the same mix reading img_codes.npy written by `pretokenize_shards` (no VQ encoder)
The VQ tokenizer is `--vq DIR` (any VQImageTokenizer folder) or, by default, an untrained diffusers VQModel of the
tiny CPU shape (64x64 -> 8x8 codes, codebook 512, channels 32/64/128/128) loaded as a VQImageTokenizer: the
encoder's cost does not depend on its weights. Data: `--data DIR` or the digits dataset written to a temporary folder.

Usage: python benchmarks/loader_throughput.py [--data DIR] [--vq DIR] [--batches 40] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def tiny_vq_folder(directory: Path) -> Path:
    from diffusers import VQModel

    model = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 64, 128, 128),
                    layers_per_block=1, latent_channels=64, num_vq_embeddings=512, vq_embed_dim=64,
                    norm_num_groups=32, sample_size=64)
    model.save_pretrained(directory)
    return directory


def rate(iterator, count_of, warmup: int, measured: int) -> float:
    for _ in range(warmup):
        next(iterator)
    started, n = time.perf_counter(), 0
    for _ in range(measured):
        n += count_of(next(iterator))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset folder with images and captions (default: digits in a temp folder)")
    parser.add_argument("--vq", help="VQ image tokenizer folder (default: untrained tiny VQModel)")
    parser.add_argument("--batches", type=int, default=40, help="measured batches per setting (default 40)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    args = parser.parse_args()

    from unimask.processor import Processor, SequenceSettings
    from unimask.tokenizers.image import VQImageTokenizer
    from unimask.tokenizers.text import train_text_tokenizer
    from unimask.training.data.format import resolve_shards
    from unimask.training.data.config import DataConfig, StreamConfig
    from unimask.training.data.loader import SampleStream, make_loader
    from unimask.training.data.pretokenize import pretokenize_shards
    from unimask.training.data.writers.digits import DIGIT_WORDS, digit_captions, write_digits

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else tmp / "digits"
        if not args.data:
            write_digits(data)
        vq_dir = Path(args.vq) if args.vq else tiny_vq_folder(tmp / "vq")
        vq = VQImageTokenizer.from_pretrained(str(vq_dir))
        texts = [c for d in range(len(DIGIT_WORDS)) for c in digit_captions(d)] * 20
        text_tok = train_text_tokenizer(texts, vocab_size=300)
        processor = Processor({"text": text_tok, "image": vq}, SequenceSettings(caption_length=16))

        started = time.perf_counter()
        pretokenize_shards(data, tmp / "codes", {"image": vq}, batch_size=64)
        pretokenize_s = time.perf_counter() - started

        bs, measured, warmup = args.batch_size, args.batches, 3
        urls, _ = resolve_shards(data)
        decode = rate(iter(SampleStream(urls, "i2t", resampled=True, shuffle_buffer=256)), lambda _: 1,
                      warmup * bs, measured * bs)

        def mixed(path: Path) -> float:
            config = DataConfig([StreamConfig(str(path), "t2i"), StreamConfig(str(path), "i2t")], batch_size=bs,
                                num_workers=args.workers, shuffle_buffer=256)
            return rate(iter(make_loader(config, processor)), len, warmup, measured)

        raw = mixed(data)
        codes = mixed(tmp / "codes")
    source = str(data) if args.data else "digits (1,797 64x64 images)"
    tokenizer = f"from {vq_dir}" if args.vq else "untrained tiny (64x64 -> 8x8, 512 codes)"
    print(f"data {source}, VQ {tokenizer}, batch {bs}, workers {args.workers}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  decode only (tar + PNG + checks)     {decode:8.0f} samples/s")
    print(f"  raw images (VQ encode on the fly)    {raw:8.0f} samples/s")
    print(f"  pre-tokenized codes                  {codes:8.0f} samples/s   ({codes / raw:.1f}x raw)")
    print(f"  pretokenize pass over the dataset    {pretokenize_s:8.1f} s")


if __name__ == "__main__":
    main()
