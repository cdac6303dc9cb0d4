"""The YAML schema of `unimask train --config configs/<name>.yaml`. Unknown keys raise with their dotted path; a key
that was renamed raises naming its new path (`RENAMED`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from unimask.masking import MaskingConfig
from unimask.model import MaskedDiffusionConfig
from unimask.processor import SequenceSettings
from unimask.training.data.loader import DataConfig

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
            raise ValueError(f"init.{' and init.'.join(starts)} both set where the weights start; choose one.")
        if self.lora_rank < 0:
            raise ValueError(f"init.lora_rank must be >= 0 (0: off), got {self.lora_rank}.")
        if self.lora_rank and not (self.bundle or self.causal_lm):
            raise ValueError("init.lora_rank adapts pretrained weights; give init.bundle (or init.causal_lm) too, or "
                             "set lora_rank to 0 to train from scratch.")


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


@dataclass
class TrainSection:
    out: str = "runs/train"  # run folder: checkpoints, logs, samples, resolved config
    steps: int = 1000  # optimizer steps
    seed: int = 0  # seed of the model init, masking and data order
    log_every: int = 10  # steps between TensorBoard scalars
    sample_every: int = 0  # steps between generated sample sheets in samples/ and TensorBoard (0: none)
    checkpoint_every: int = 500  # steps between checkpoints
    keep_last: int = 2  # checkpoints kept
    deepspeed: str = ""  # DeepSpeed JSON (configs/deepspeed/zero2.json); "" trains with plain torch
    precision: str = "auto"  # "auto" (bf16 on GPUs that have it, else fp32), "fp32" or "bf16"
    peak_flops: float = 0.0  # peak FLOP/s per device for MFU (0: measure a 2048^2 fp32 matmul at start)
    device: str = "auto"  # "auto", "cpu" or "cuda"
    ranks: int = 1  # CPU data-parallel ranks started here without a launcher: N, or 0 for one per core
    max_nonfinite_steps: int = 5  # steps in a row skipped for a non-finite loss / gradient norm before stopping
    compile: bool = False  # torch.compile the model (in place: checkpoints and exports keep their keys)
    compile_mode: str = "default"  # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune"
    attention_kernel: str = "auto"  # "sdpa", "flex" (block masks; fast when compiled on CUDA) or "auto"

    def __post_init__(self) -> None:
        if self.ranks < 0:
            raise ValueError(f"train.ranks must be >= 0 (0: one per CPU core), got {self.ranks}.")
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"train.max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}.")
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.compile_mode not in modes:
            raise ValueError(f"train.compile_mode must be one of {modes}, got {self.compile_mode!r}.")
        if self.attention_kernel not in ("auto", "sdpa", "flex"):
            raise ValueError(f"train.attention_kernel must be 'auto', 'sdpa' or 'flex', got {self.attention_kernel!r}.")


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
