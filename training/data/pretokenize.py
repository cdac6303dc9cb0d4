"""`unimask data pretokenize`: copy a dataset's shards adding the codes of chosen modalities (`img_codes.npy`,
`act_codes.npy`, or any registered modality's `codes_key`).

Training then reads codes instead of running the tokenizers on every step (the loader uses codes when present).
Every original entry is kept (png, txt, actions.npy, ...), so the pre-tokenized folder is still a complete dataset;
sample keys, split membership and order are unchanged. The card records which tokenizers made the codes and their
vocabulary sizes (the loader refuses codes of another size). Codes are flat int16 arrays (int32 when a code is
>= 32768): what the modality's tokenizer gives for the sample's value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


from unimask.modality import SampleError
from unimask.processor import SequenceSettings
from unimask.registry import get_modality

from .format import DataError, DatasetWriter, encode_npy, read_card, read_raw


def pretokenize_shards(inp: str | Path, out: str | Path, tokenizers: Mapping[str, Any], *,
                       settings: SequenceSettings | None = None, batch_size: int = 64,
                       provenance: dict[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """Write `out` = `inp` + the codes of every modality in `tokenizers` ({name: tokenizer}); returns the new card."""
    inp, out = Path(inp), Path(out)
    if inp.resolve() == out.resolve():
        raise DataError("--out must differ from --in: pre-tokenizing rewrites every shard.")
    if not tokenizers:
        raise DataError("nothing to do: give at least one tokenizer (--vq, --actions or --tokenizer NAME=DIR).")
    modalities = {name: get_modality(name) for name in tokenizers}
    for name, modality in modalities.items():
        if modality.codes_key is None:
            raise DataError(f"the {name} modality has no pre-tokenized form (no codes_key); drop its tokenizer.")
    settings = settings or SequenceSettings()
    card = read_card(inp)
    stats: dict[str, Any] = {"samples": 0, "read_errors": 0, "undecodable": 0, "encoded": dict.fromkeys(tokenizers, 0)}
    errors: list[str] = []
    splits = list(card["splits"])
    largest = max(max(1, -(-info["count"] // max(1, len(info["shards"])))) for info in card["splits"].values())
    with DatasetWriter(out, card.get("name", "data"), maxcount=largest, splits=splits) as writer:
        for split in splits:
            pending: list[dict[str, Any]] = []

            def flush() -> None:
                for name, modality in modalities.items():
                    todo = [s for s in pending if any(k in s for k in modality.raw_keys)]
                    values = []
                    for sample in todo:
                        meta = json.loads(sample["json"]) if "json" in sample else {}
                        values.append(modality.read(sample, meta))
                    if todo:
                        for sample, codes in zip(todo, modality.encode(tokenizers[name], values, settings)):
                            sample[modality.codes_key] = encode_npy(modality.codes_entry(codes))
                        stats["encoded"][name] += len(todo)
                for sample in pending:
                    writer.write(split, sample)
                    stats["samples"] += 1
                pending.clear()

            urls = [str(inp / rel) for rel in card["splits"][split]["shards"]]
            for raw in read_raw(urls, lambda exn: errors.append(f"{type(exn).__name__}: {exn}")):
                pending.append({k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"})
                if len(pending) >= batch_size:
                    try:
                        flush()
                    except (SampleError, ValueError) as err:
                        raise DataError(f"{inp} ({split}): a sample could not be tokenized ({err}); check the data "
                                        "with `unimask data inspect`.") from None
            flush()
        stats["read_errors"] = len(errors)
        new = {k: v for k, v in card.items() if k not in ("format", "name", "splits", "bytes", "seconds", "command")}
        new["pretokenized"] = {"from": str(inp), **(provenance or {}),
                               "vocab_sizes": {name: modalities[name].vocab_size(tok) for name, tok in tokenizers.items()},
                               "action_length": settings.action_length, "stats": stats, "errors": errors[:20]}
        new["command"] = command
        return writer.finish(new)


def pretokenize_dataset(inp: str | Path, out: str | Path, folders: Mapping[str, str], *,
                        action_length: int | None = None, batch_size: int = 64, device: str = "cpu",
                        command: str | None = None) -> dict[str, Any]:
    """`unimask data pretokenize`: load the tokenizers from their folders ({modality: dir}) and pre-tokenize."""
    tokenizers = {}
    for name, folder in folders.items():
        tokenizer = get_modality(name).load_tokenizer(folder)
        if device != "cpu" and hasattr(tokenizer, "to"):
            tokenizer.to(device)
        tokenizers[name] = tokenizer
    settings = SequenceSettings(action_length=action_length)
    if "action" in tokenizers:
        try:
            tokenizers["action"].tokens_per_chunk(settings.action_horizon, action_length)
        except ValueError as err:
            raise DataError(f"--actions: {err} Pass --action-length L.") from None
    provenance = {"tokenizers": {name: str(Path(folder).resolve()) for name, folder in folders.items()}}
    card = pretokenize_shards(inp, out, tokenizers, settings=settings, batch_size=batch_size, provenance=provenance,
                              command=command)
    print(json.dumps(card["pretokenized"]["stats"]))
    return card
