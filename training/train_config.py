"""The YAML schema of `unimask train --config configs/<name>.yaml`. Unknown keys raise with their dotted path; a key
that was renamed raises naming its new path (`RENAMED`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from unimask.encoders import encoder_config
from unimask.errors import ConfigError, InputError, check_choice, check_integer_fields, check_number
from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig
from unimask.processor import Processor, SequenceSettings
from unimask.registry import modalities
from unimask.training.data.config import DataConfig

MAX_SEED = 2**32 - 1  # seeds feed numpy's SeedSequence and torch generators (seed * 1000 + rank) alike
MAX_LOCAL_RANKS = 256  # CPU ranks one machine starts (train.ranks); more is a typo, not a machine


# Old dotted key -> (new dotted key, how to write the old value under the new key).
RENAMED = {
    "model.init_from": ("init.causal_lm", "the same folder"),
    "model.image_embedding_init": ("init.codebook_embeddings", "`codebook` becomes [image]"),
    "tokenizers.action_length": ("sequence.action_length", "the same number"),
}


@dataclass
class InitSection:
    causal_lm: str = ""  # a local Llama-style causal LM folder to start from (AR-init); "" starts from scratch
    codebook_embeddings: list[str] = field(default_factory=list)  # modalities whose rows start from their codebook
    bundle: str = ""  # an exported bundle to fine-tune: its weights, tokenizers and sequence settings (finetune.py)
    lora_rank: int = 0  # LoRA adapters of this rank on attention + MLP, the rest frozen, merged at export (0: off)
    lora_alpha: float = 16.0  # LoRA scale numerator: updates are scaled by lora_alpha / lora_rank
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input

    def __post_init__(self) -> None:
        starts = [name for name, value in (("causal_lm", self.causal_lm), ("bundle", self.bundle),
                                           ("codebook_embeddings", self.codebook_embeddings)) if value]
        if len(starts) > 1:
            raise ConfigError(f"init.{' and init.'.join(starts)} both set where the weights start; choose one.",
                              key=starts[0])
        check_integer_fields(self, (("lora_rank", 0, math.inf, "0 turns LoRA off"),))
        check_number("lora_alpha", self.lora_alpha, 0, open_low=True, error=ConfigError)
        check_number("lora_dropout", self.lora_dropout, 0, 1, open_high=True, error=ConfigError)
        if self.lora_rank and not (self.bundle or self.causal_lm):
            raise ConfigError("init.lora_rank adapts pretrained weights; give init.bundle (or init.causal_lm) too, or "
                              "set lora_rank to 0 to train from scratch.", key="lora_rank")


@dataclass
class OptimSection:
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    warmup: int = 100  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # AdamW betas
    grad_clip: float = 1.0  # global gradient-norm clip (0: off)
    grad_accum: int = 1  # micro-batches per optimizer step
    ema: float = 0.0  # EMA decay of the weights kept for export (0: off)

    def __post_init__(self) -> None:
        check_number("lr", self.lr, 0, open_low=True, fix="a peak learning rate such as 1e-3", error=ConfigError)
        for name, high, open_high in (("min_lr_ratio", 1, False), ("weight_decay", math.inf, False),
                                      ("grad_clip", math.inf, False), ("ema", 1, True)):
            check_number(name, getattr(self, name), 0, high, open_high=open_high, error=ConfigError)
        check_integer_fields(self, (("warmup", 0, math.inf, "0 starts at the full learning rate"),
                              ("grad_accum", 1, 4096, "1 steps after every micro-batch")))
        if not isinstance(self.betas, list) or len(self.betas) != 2:
            raise ConfigError(f"`betas` must be a list of two numbers in [0, 1), got {self.betas!r}; e.g. "
                              "[0.9, 0.98].", key="betas")
        for beta in self.betas:
            check_number("betas", beta, 0, 1, open_high=True, fix="e.g. [0.9, 0.98]", error=ConfigError)


@dataclass
class TrainSection:
    out: str = "runs/train"  # run folder: checkpoints, logs, samples, resolved config
    steps: int = 1000  # optimizer steps
    seed: int = 0  # seed of the model init, masking and data order
    log_every: int = 10  # steps between TensorBoard scalars
    sample_every: int = 0  # steps between generated sample sheets in samples/ and TensorBoard (0: none)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_last: int = 2  # newest complete checkpoints kept (0: all)
    deepspeed: str = ""  # DeepSpeed JSON (configs/deepspeed/zero2.json); "" trains with plain torch
    precision: str = "auto"  # "fp32", "bf16", or "auto": bf16 where matmuls run natively in it (GPUs, AVX512-BF16 CPUs)
    peak_flops: float = 0.0  # peak FLOP/s per device for MFU (0: measure a 2048^2 fp32 matmul at start)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    ranks: int = 1  # CPU data-parallel ranks started here without a launcher: N, or 0 for one per core
    max_nonfinite_steps: int = 5  # steps in a row skipped for a non-finite loss / gradient norm before stopping
    compile: bool = False  # torch.compile the model (in place: checkpoints and exports keep their keys)
    compile_mode: str = "default"  # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune"
    attention_kernel: str = "auto"  # "sdpa", "math" (fastest backward on a CPU), "flex" (compiled, CUDA) or "auto"

    def __post_init__(self) -> None:
        check_integer_fields(self, (
            ("steps", 1, math.inf, "it counts optimizer steps, e.g. 1000"),
            ("seed", 0, MAX_SEED, ""),
            ("log_every", 1, math.inf, "1 logs every step"),
            ("sample_every", 0, math.inf, "0 writes no samples"),
            ("checkpoint_every", 1, math.inf, "a checkpoint is also written at the last step"),
            ("keep_last", 0, math.inf, "0 keeps every checkpoint"),
            ("ranks", 0, MAX_LOCAL_RANKS, "0 starts one rank per CPU core"),
            ("max_nonfinite_steps", 1, math.inf, "")))
        check_number("peak_flops", self.peak_flops, 0, fix="0 measures it at start", error=ConfigError)
        check_choice("precision", self.precision, ("auto", "fp32", "bf16"), error=ConfigError)
        check_choice("device", self.device, ("auto", "cpu", "cuda"), error=ConfigError)
        if not isinstance(self.out, str) or not self.out.strip():
            raise ConfigError(f"`out` must name the run folder, got {self.out!r}.", key="out")
        check_choice("compile_mode", self.compile_mode,
                     ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"), error=ConfigError)
        check_choice("attention_kernel", self.attention_kernel, ("auto", "sdpa", "math", "flex"),
                     error=ConfigError)


@dataclass
class TrainConfig:
    model: MaskedDiffusionConfig = field(default_factory=MaskedDiffusionConfig)  # architecture (vocab from tokenizers)
    init: InitSection = field(default_factory=InitSection)  # where the weights start
    tokenizers: dict[str, str] = field(default_factory=dict)  # modality -> tokenizer folder (text, image, action, ...)
    sequence: SequenceSettings = field(default_factory=SequenceSettings)  # template lengths
    data: DataConfig = field(default_factory=DataConfig)  # streams, batch size, workers
    masking: MaskingConfig = field(default_factory=MaskingConfig)  # forward process and loss weights
    optim: OptimSection = field(default_factory=OptimSection)  # optimizer and schedule
    train: TrainSection = field(default_factory=TrainSection)  # run length, logging, checkpoints, engine

    def __post_init__(self) -> None:
        for name, spec in self.model.encoders.items():
            try:
                encoder_config(spec)
            except InputError as err:
                raise ConfigError(f"model.encoders.{name}: {err}", key=f"model.encoders.{name}") from None
        for name, folder in self.tokenizers.items():
            if not isinstance(folder, str):
                raise ConfigError(f"`tokenizers.{name}` must be a tokenizer folder, got {folder!r}.",
                                  key=f"tokenizers.{name}")
            check_choice(f"tokenizers.{name}", name, tuple(modalities()), fix="its keys are modality names",
                         error=ConfigError)


def trained_tasks(config: TrainConfig) -> list[str]:
    """The tasks a config trains (recorded in the bundle, whose loading checks them against the model)."""
    return sorted({stream.task for stream in config.data.streams})


def check_model_fits(config: TrainConfig, processor: Processor) -> None:
    """Refuse a model section that contradicts the tokenizers: a `vocab_size` other than theirs, or a
    `max_seq_len` shorter than the longest sequence of a trained task (with its target copies)."""
    if config.model.vocab_size not in (0, processor.vocab.size):
        raise ConfigError(f"`model.vocab_size` is {config.model.vocab_size} but the tokenizers make a vocabulary of "
                          f"{processor.vocab.size}; leave it out (it is taken from the tokenizers).",
                          key="model.vocab_size")
    for task in trained_tasks(config):
        copies = config.masking.target_copies.get(task, 1)
        needed = processor.sequence_length(task, copies)
        if needed > config.model.max_seq_len:
            raise ConfigError(f"{task} sequences take up to {needed} tokens ({copies} target copies, "
                              f"{processor.settings}) but `model.max_seq_len` is {config.model.max_seq_len}; raise it "
                              f"to {needed}, or shorten the sequence settings.", key="model.max_seq_len")
