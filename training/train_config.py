"""The YAML schema of `unimask train --config configs/<name>.yaml`. Unknown keys raise with their dotted path."""

from __future__ import annotations

from dataclasses import dataclass, field

from unimask.masking import MaskingConfig
from unimask.training.data.loader import DataConfig


@dataclass
class ModelSection:
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4  # Transformer blocks
    n_heads: int = 4  # query heads
    n_kv_heads: int | None = None  # key/value heads (None: n_heads)
    ffn_hidden: int | None = None  # SwiGLU width (None: 8/3 d_model rounded to 64)
    max_seq_len: int = 512  # longest sequence
    attention: str = "prefix"  # "prefix" (exact prefix cache) or "full"
    dropout: float = 0.0  # dropout in attention and residual branches
    tie_embeddings: bool = True  # share input embedding and output projection
    init_from: str = ""  # a local Llama-style causal LM folder to start from (AR-init); "" starts from scratch
    image_embedding_init: str = "normal"  # "normal", or "codebook": image-code rows start from the VQ codebook

    def __post_init__(self) -> None:
        if self.image_embedding_init not in ("normal", "codebook"):
            raise ValueError(f"model.image_embedding_init must be 'normal' or 'codebook', "
                             f"got {self.image_embedding_init!r}.")


@dataclass
class TokenizerSection:
    text: str = ""  # text tokenizer folder (unimask train-text-tokenizer, or any HF fast tokenizer)
    image: str = ""  # VQImageTokenizer folder ("" if the model uses no images)
    action: str = ""  # action tokenizer folder ("" if the model writes no actions)
    state: str = ""  # state BinActionTokenizer folder ("" if no proprioceptive state tokens)
    action_length: int | None = None  # FAST only: fixed number of action codes per chunk


@dataclass
class SequenceSection:
    caption_length: int = 32  # fixed text target length (caption + <eos> + <pad>s)
    max_condition_text: int = 64  # longest prompt/instruction in tokens
    action_horizon: int = 8  # action steps per chunk
    action_dim: int = 4  # action dimensions


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


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)  # architecture
    tokenizers: TokenizerSection = field(default_factory=TokenizerSection)  # tokenizer folders
    sequence: SequenceSection = field(default_factory=SequenceSection)  # template lengths
    data: DataConfig = field(default_factory=DataConfig)  # streams, batch size, workers
    masking: MaskingConfig = field(default_factory=MaskingConfig)  # forward process and loss weights
    optim: OptimSection = field(default_factory=OptimSection)  # optimizer and schedule
    train: TrainSection = field(default_factory=TrainSection)  # run length, logging, checkpoints, engine
