"""`unimask data pretokenize`: copy a dataset's shards adding `img_codes.npy` and/or `act_codes.npy`.

Training then reads codes instead of running the VQ encoder on every step (the loader uses codes when present).
Every original entry is kept (png, txt, actions.npy, ...), so the pre-tokenized folder is still a complete dataset;
sample keys, split membership and order are unchanged. The card records which tokenizers made the codes, and
`img_codes.npy` is [h, w] int16 (int32 for codebooks > 32767), `act_codes.npy` is what the action tokenizer's
`encode` returns for the sample's chunk ([H, D] for bins; [L] for FAST with a fixed `action_length`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .format import DataError, DatasetWriter, encode_npy, read_card
from .loader import read_raw


def _codes_dtype(codes: np.ndarray) -> Any:
    return np.int16 if codes.size == 0 or int(codes.max()) < 2**15 else np.int32


def pretokenize_shards(inp: str | Path, out: str | Path, *, image_tokenizer: Any = None, action_tokenizer: Any = None,
                       action_length: int | None = None, batch_size: int = 64, provenance: dict[str, Any] | None = None,
                       command: str | None = None) -> dict[str, Any]:
    """Write `out` = `inp` + codes from the given tokenizer objects (either may be None); returns the new card."""
    from PIL import Image

    inp, out = Path(inp), Path(out)
    if inp.resolve() == out.resolve():
        raise DataError("--out must differ from --in: pre-tokenizing rewrites every shard.")
    if image_tokenizer is None and action_tokenizer is None:
        raise DataError("nothing to do: give an image tokenizer (--vq) and/or an action tokenizer (--actions).")
    card = read_card(inp)
    if action_tokenizer is not None and not card.get("action_dim"):
        raise DataError(f"{inp} has no actions (source {card.get('source')}); drop --actions.")
    stats = {"samples": 0, "read_errors": 0, "images_encoded": 0, "actions_encoded": 0}
    errors: list[str] = []
    splits = list(card["splits"])
    largest = max(max(1, -(-info["count"] // max(1, len(info["shards"])))) for info in card["splits"].values())
    code_shape: list[int] | None = None
    with DatasetWriter(out, card.get("name", "data"), maxcount=largest, splits=splits) as writer:
        for split in splits:
            urls = [str(inp / rel) for rel in card["splits"][split]["shards"]]
            pending: list[dict[str, Any]] = []

            def flush() -> None:
                nonlocal code_shape
                if image_tokenizer is not None and pending:
                    images = np.stack([np.asarray(Image.open(io.BytesIO(s.get("png") or s["jpg"])).convert("RGB"))
                                       for s in pending])
                    with torch.no_grad():
                        codes = image_tokenizer.encode(images)
                    codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
                    code_shape = list(codes.shape[1:])
                    for sample, c in zip(pending, codes):
                        sample["img_codes.npy"] = encode_npy(c.astype(_codes_dtype(codes)))
                    stats["images_encoded"] += len(pending)
                for sample in pending:
                    writer.write(split, sample)
                    stats["samples"] += 1
                pending.clear()

            for raw in read_raw(urls, lambda exn: errors.append(f"{type(exn).__name__}: {exn}")):
                sample = {k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}
                if action_tokenizer is not None and "actions.npy" in sample:
                    chunk = np.load(io.BytesIO(sample["actions.npy"]), allow_pickle=False)
                    codes = (action_tokenizer.encode(chunk, length=action_length) if action_length
                             else action_tokenizer.encode(chunk))
                    codes = np.asarray(codes)
                    sample["act_codes.npy"] = encode_npy(codes.astype(_codes_dtype(codes)))
                    stats["actions_encoded"] += 1
                if image_tokenizer is not None and not ("png" in sample or "jpg" in sample):
                    writer.write(split, sample)  # nothing to encode (e.g. a text-only sample)
                    stats["samples"] += 1
                    continue
                pending.append(sample)
                if len(pending) >= batch_size:
                    flush()
            flush()
        stats["read_errors"] = len(errors)
        new = {k: v for k, v in card.items() if k not in ("format", "name", "splits", "bytes", "seconds", "command")}
        new["pretokenized"] = {"from": str(inp), "image_code_shape": code_shape, "action_length": action_length,
                               **(provenance or {}), "stats": stats, "errors": errors[:20]}
        new["command"] = command
        return writer.finish(new)


def pretokenize_dataset(inp: str | Path, out: str | Path, *, vq: str | None = None, actions: str | None = None,
                        action_length: int | None = None, batch_size: int = 64, device: str = "cpu",
                        command: str | None = None) -> dict[str, Any]:
    """`unimask data pretokenize`: load the tokenizers from their folders and call `pretokenize_shards`."""
    image_tokenizer = action_tokenizer = None
    provenance: dict[str, Any] = {}
    if vq:
        try:
            from unimask.tokenizers.image import VQImageTokenizer
        except ImportError as err:
            raise DataError(f"--vq needs unimask.tokenizers.image, which could not be imported ({err}).") from None
        image_tokenizer = VQImageTokenizer.from_pretrained(vq)
        if device != "cpu":
            moved = image_tokenizer.to(device)
            image_tokenizer = image_tokenizer if moved is None else moved
        provenance["vq"] = str(Path(vq).resolve())
        provenance["codebook_size"] = getattr(image_tokenizer, "codebook_size", None)
    if actions:
        from unimask.tokenizers.action import load_action_tokenizer

        action_tokenizer = load_action_tokenizer(actions)
        provenance["actions"] = str(Path(actions).resolve())
        provenance["action_tokenizer"] = type(action_tokenizer).__name__
        provenance["action_vocab_size"] = getattr(action_tokenizer, "vocab_size", None)
        if hasattr(action_tokenizer, "pad_code") and action_length is None:
            raise DataError("a FAST action tokenizer gives variable-length codes: pass --action-length L (see "
                            "FASTActionTokenizer.suggest_length) so every chunk gets L codes.")
    card = pretokenize_shards(inp, out, image_tokenizer=image_tokenizer, action_tokenizer=action_tokenizer,
                              action_length=action_length, batch_size=batch_size, provenance=provenance,
                              command=command)
    print(json.dumps(card["pretokenized"]["stats"]))
    return card
