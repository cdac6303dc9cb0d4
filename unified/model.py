"""MaskedDiffusionTransformer: the one bidirectional network that un-masks text, image and action tokens.

Pre-norm blocks with RMSNorm, SwiGLU and rotary positions (Llama's layout, so a Llama checkpoint's weights map onto
it one to one), PyTorch `scaled_dot_product_attention`, and no time conditioning: with an absorbing [MASK] state the
number of masks in the input already tells the network how noisy it is (MDLM, LLaDA).

Attention follows the segments of `unimask.sequence`: with `attention="prefix"` the condition attends only to
itself and the target attends to everything, so the condition's keys and values do not depend on the target and a
`PrefixCache` of them is exact. `attention="full"` makes every token attend to every other one.

The model holds no loss and no training code: the loss lives in `unimask.masking`, the rest in `unimask.training`.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .atomic import as_path, atomic_write, atomic_write_text, read_json
from .encoders import build_encoder, place_encoded
from .errors import ConfigError, InputError, MissingFileError, check_choice, check_integer_fields, check_number
from .sequence import CONDITION, PAD_SEGMENT, TARGET, attention_mask_from_segments, segment_block_mask

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class MaskedDiffusionConfig:
    vocab_size: int = 0  # total ids of the UnifiedVocab; 0 in a train config: set from the tokenizers
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4  # number of Transformer blocks
    n_heads: int = 4  # attention heads for queries
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None means n_heads
    ffn_hidden: int | None = None  # SwiGLU hidden width; None means 8/3 * d_model rounded up to a multiple of 64
    max_seq_len: int = 1024  # longest sequence the model is meant for (checked in forward)
    rope_theta: float = 10000.0  # base of the rotary position frequencies
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # share the input embedding and the output projection
    attention: str = "prefix"  # "prefix": condition attends to itself only (exact prefix cache); "full": all-to-all
    dropout: float = 0.0  # dropout on attention and residual branches during training
    init_std: float = 0.02  # std of the normal initialisation
    encoders: dict[str, dict] = field(default_factory=dict)  # continuous inputs: modality -> encoder settings
    # Learned embeddings of a payload token's place in its segment (`payload_slots`, up to this many; 0: none).
    segment_positions: int = 0

    def __post_init__(self) -> None:
        check_integer_fields(self, (("d_model", 1, 65536, ""), ("n_layers", 1, 1024, ""), ("n_heads", 1, 1024, ""),
                                    ("max_seq_len", 1, 2**20, "the longest task sequence must fit")))
        self.n_kv_heads = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        self.ffn_hidden = 64 * math.ceil(8 * self.d_model / 3 / 64) if self.ffn_hidden is None else self.ffn_hidden
        check_integer_fields(self, (("n_kv_heads", 1, self.n_heads, ""), ("ffn_hidden", 1, 2**20, ""),
                                    ("segment_positions", 0, 2**16, "0 embeds none")))
        for name, low, high, open_high in (("rope_theta", 0, math.inf, False), ("norm_eps", 0, 1, False),
                                           ("dropout", 0, 1, True), ("init_std", 0, 1, False)):
            check_number(name, getattr(self, name), low, high, open_low=name != "dropout", open_high=open_high,
                         error=ConfigError)
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0 or self.vocab_size == 1:
            raise ConfigError(f"`vocab_size` must be >= 2 (or 0: from the tokenizers), got {self.vocab_size!r}.",
                              key="vocab_size")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"`d_model` ({self.d_model}) must be divisible by `n_heads` ({self.n_heads}) into an "
                              "even head size (rotary positions rotate pairs); e.g. d_model=256 with n_heads=4.",
                              key="d_model")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"`n_heads` ({self.n_heads}) must be a multiple of `n_kv_heads` ({self.n_kv_heads}).",
                              key="n_heads")
        check_choice("attention", self.attention, ("prefix", "full"), error=ConfigError)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_parameters(self) -> int:
        """Parameter count implied by the config (embeddings counted once when tied; encoders not counted)."""
        kv = self.n_kv_heads * self.head_dim
        attention = self.d_model * (2 * self.d_model + 2 * kv)
        mlp = 3 * self.d_model * self.ffn_hidden
        per_layer = attention + mlp + 2 * self.d_model
        embeddings = self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2)
        return self.n_layers * per_layer + embeddings + self.d_model


@dataclass
class PrefixCache:
    """Keys and values of a condition segment, one (k, v) pair per layer, each (B, n_kv_heads, Lc, head_dim)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_valid: torch.Tensor  # (B, Lc) bool: False at padding
    next_position: torch.Tensor  # (B,) long: position id of the first token after the condition


@dataclass
class MaskedDiffusionOutput:
    logits: torch.Tensor  # (B, L, V)
    hidden_states: torch.Tensor | None = None  # (B, L, d_model) after the final norm, if requested
    prefix_cache: PrefixCache | None = None  # when `return_prefix_cache=True`


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin of shape (B, 1, L, head_dim) in Llama's half-split layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids[..., None].float() * inv_freq  # (B, L, head_dim/2)
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, L, head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.d_model, config.n_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.d_model, config.n_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.n_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.n_heads * config.head_dim, config.d_model, bias=False)
        self.dropout = config.dropout

    def forward(self, x, cos, sin, mask, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """`mask` is a bool (B, Lq, Lk) mask for `scaled_dot_product_attention`, or a flex-attention `BlockMask`."""
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.v_proj(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        new_kv = (k, v)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        if not isinstance(mask, torch.Tensor):
            y = torch.nn.attention.flex_attention.flex_attention(q, k, v, block_mask=mask,
                                                                 enable_gqa=self.n_kv_heads != self.n_heads)
        else:
            if self.n_kv_heads != self.n_heads:
                repeat = self.n_heads // self.n_kv_heads
                k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None],
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, L, self.n_heads * self.head_dim)  # (B, L, H*hd)
        return self.o_proj(y), new_kv


class SwiGLU(nn.Module):
    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, mask, past=None):
        attended, new_kv = self.attn(self.attn_norm(x), cos, sin, mask, past)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.mlp(self.mlp_norm(x)))
        return x, new_kv


class MaskedDiffusionTransformer(nn.Module):
    config_class = MaskedDiffusionConfig

    def __init__(self, config: MaskedDiffusionConfig):
        super().__init__()
        if config.vocab_size < 2:
            raise ValueError("the model config has no vocabulary size yet; set `vocab_size` to the vocabulary's "
                             "(`dataclasses.replace(config, vocab_size=vocab.size)`).")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.slot_embed = (nn.Embedding(config.segment_positions + 1, config.d_model, padding_idx=0)
                           if config.segment_positions else None)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.apply(self._init_weights)
        # Built after the normal init: the encoders keep PyTorch's convolution init.
        self.encoders = nn.ModuleDict({name: build_encoder(spec, config.d_model)
                                       for name, spec in config.encoders.items()})
        # Residual projections start smaller so the stream's variance does not grow with depth (GPT-2).
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layers))

    # A runtime choice, not architecture: "sdpa" (bool mask), "math" (SDPA's explicit path: its backward is the fastest
    # on a CPU at these lengths) or "flex" (a block mask from the segments, fast when compiled on CUDA). All three
    # compute the same attention (tests/test_utilization.py).
    attention_kernel: str = "sdpa"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    @torch.no_grad()
    def init_embedding_rows(self, start: int, features: torch.Tensor, seed: int = 0) -> None:
        """Start the embedding rows `start .. start + K` from K feature vectors (K, C) instead of noise.

        Features are standardised per dimension and sent through a fixed random projection to `d_model`, at the
        scale of the normal initialisation. Used for VQ codes: codes whose codebook vectors are close start close,
        so the model does not have to discover from scratch which of hundreds of codes mean the same stroke.
        """
        features = torch.as_tensor(features, dtype=torch.float32).detach().cpu()
        if features.dim() != 2 or len(features) == 0:
            raise ValueError(f"`features` must be a non-empty (K, C) matrix, got shape {tuple(features.shape)}.")
        if start < 0 or start + len(features) > self.config.vocab_size:
            raise ValueError(f"rows {start}..{start + len(features)} do not fit the vocabulary of "
                             f"{self.config.vocab_size}.")
        standardised = (features - features.mean(0)) / features.std(0).clamp(min=1e-6)
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(features.shape[1], self.config.d_model, generator=generator)
        rows = standardised @ projection / features.shape[1] ** 0.5 * self.config.init_std
        weight = self.embed_tokens.weight
        weight[start:start + len(features)] = rows.to(device=weight.device, dtype=weight.dtype)

    def _embed(self, input_ids: torch.Tensor, features: dict[str, torch.Tensor], check: bool) -> torch.Tensor:
        """Token embeddings, each continuous input's encoder tokens at its placeholder positions."""
        x = self.embed_tokens(input_ids)
        for name, values in features.items():
            if name not in self.encoders:
                raise ValueError(f"this model has no encoder for the continuous input {name!r}; it has "
                                 f"{sorted(self.encoders)}.")
            x = place_encoded(x, input_ids, name, values, self.encoders[name], check)
        return x

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in set(self.parameters()))

    def forward(
        self,
        input_ids: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        prefix_cache: PrefixCache | None = None,
        return_prefix_cache: bool = False,
        output_hidden_states: bool = False,
        features: dict[str, torch.Tensor] | None = None,
        slot_ids: torch.Tensor | None = None,
    ) -> MaskedDiffusionOutput:
        """Logits for every position. input_ids: (B, L) vocabulary ids. segment_ids: (B, L) 0 pad / 1 condition / 2 target; None means one
        bidirectional target segment (masked by `attention_mask` if that is a (B, L) 0/1 padding mask).
        attention_mask: optional (B, L) padding mask, or a (B, L, Lk) bool mask that overrides the segment rule.
        position_ids: (B, L); None means 0..L-1 after any prefix cache.
        prefix_cache: keys/values of the condition computed earlier (`return_prefix_cache=True` on a forward over
        the condition alone); `input_ids` then hold only the target segment.
        features: continuous inputs by modality (the batch's `features`, e.g. pixels (B, 3, R, R)); their encoder's
        tokens replace the embeddings at the modality's placeholder positions. slot_ids: (B, L) each payload token's
        place in its segment (`unimask.sequence.payload_slots`), embedded when `config.segment_positions` > 0.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"`input_ids` must be a non-empty (batch, length) tensor, got shape {tuple(input_ids.shape)}.")
        B, L = input_ids.shape
        # Checks that read values back wait for the device: skipped in training on an accelerator (the loader checked).
        check = input_ids.device.type == "cpu" or not self.training
        if check and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(
                f"`input_ids` must lie in [0, {self.config.vocab_size}), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]."
            )
        past_len = 0 if prefix_cache is None else prefix_cache.key_valid.shape[1]
        if past_len + L > self.config.max_seq_len:
            raise ValueError(f"sequence length {past_len + L} exceeds max_seq_len={self.config.max_seq_len}.")
        if segment_ids is None:
            segment_ids = torch.full_like(input_ids, TARGET)
            if attention_mask is not None and attention_mask.dim() == 2:
                segment_ids = torch.where(attention_mask.bool(), segment_ids, PAD_SEGMENT)
        if position_ids is None:
            start = prefix_cache.next_position[:, None] if prefix_cache is not None else 0
            position_ids = start + torch.arange(L, device=input_ids.device)[None].expand(B, L)

        key_segments = segment_ids
        if prefix_cache is not None:
            if bool((segment_ids == CONDITION).any()):
                raise ValueError("with a `prefix_cache`, `input_ids` must hold only target (and padding) positions.")
            key_segments = torch.cat([torch.where(prefix_cache.key_valid, CONDITION, PAD_SEGMENT), segment_ids], 1)
        if attention_mask is not None and attention_mask.dim() == 3:
            mask = attention_mask.bool()
        elif self.attention_kernel == "flex" and not (self.training and self.config.dropout):
            mask = segment_block_mask(segment_ids, key_segments, self.config.attention)
        else:
            mask = attention_mask_from_segments(segment_ids, key_segments, self.config.attention)

        x = self._embed(input_ids, features or {}, check)  # (B, L, d)
        if self.slot_embed is not None and slot_ids is not None:
            x = x + self.slot_embed(slot_ids.clamp(max=self.config.segment_positions)).to(x.dtype)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        keys, values = [], []
        backend = torch.nn.attention.SDPBackend.MATH if self.attention_kernel == "math" else None
        with torch.nn.attention.sdpa_kernel(backend) if backend else contextlib.nullcontext():
            for i, block in enumerate(self.blocks):
                past = None if prefix_cache is None else (prefix_cache.keys[i], prefix_cache.values[i])
                x, (k, v) = block(x, cos, sin, mask, past)
                if return_prefix_cache:
                    keys.append(k)
                    values.append(v)
        x = self.norm(x)
        logits = self.lm_head(x)  # (B, L, V)

        cache = None
        if return_prefix_cache:
            if prefix_cache is not None:
                raise ValueError("`return_prefix_cache` builds a cache from a condition; do not pass one in as well.")
            if bool((segment_ids >= TARGET).any()) and self.config.attention == "prefix":
                raise ValueError("build a prefix cache from the condition segment alone (no target positions).")
            if self.config.attention != "prefix":
                raise ValueError("an exact prefix cache needs attention='prefix'; this model uses full attention.")
            valid = segment_ids != PAD_SEGMENT
            next_position = torch.where(valid, position_ids, -1).max(dim=1).values + 1
            cache = PrefixCache(keys, values, valid, next_position)
        return MaskedDiffusionOutput(logits=logits, hidden_states=x if output_hidden_states else None,
                                     prefix_cache=cache)

    # ----- persistence (transformers-style folder: config.json + model.safetensors) -------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            state.pop("lm_head.weight")
        atomic_write(directory / WEIGHTS_FILE, lambda path: save_file(state, path, metadata={"format": "pt"}))
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> "MaskedDiffusionTransformer":
        from safetensors.torch import load_file

        directory = as_path(directory, "directory")
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise MissingFileError(f"{directory} has no {name}; save the model with save_pretrained(dir) first.")
        raw = read_json(directory / CONFIG_FILE, InputError, "a unimask model config")
        unknown = sorted(set(raw) - {f.name for f in fields(MaskedDiffusionConfig)}) if isinstance(raw, dict) else [
            "(not a JSON object)"]
        if unknown:
            raise InputError(f"{directory / CONFIG_FILE} has unknown keys {unknown}; another version wrote it.")
        try:
            model = cls(MaskedDiffusionConfig(**raw))
        except (TypeError, ValueError) as err:
            raise InputError(f"{directory / CONFIG_FILE}: {err}") from None
        try:
            state = load_file(str(directory / WEIGHTS_FILE), device=str(map_location))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for damaged files
            raise InputError(f"{directory / WEIGHTS_FILE} cannot be read ({type(err).__name__}: {err}); the file is "
                             "damaged or truncated. Export the model again.") from None
        broken = [key for key, value in state.items() if value.is_floating_point() and not value.isfinite().all()]
        if broken:
            raise InputError(f"{directory / WEIGHTS_FILE} holds NaN or infinite weights ({', '.join(broken[:3])}); it "
                             "is damaged or was saved from a diverged run. Export an earlier checkpoint.")
        if model.config.tie_embeddings and "embed_tokens.weight" in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1:2] or [str(err)]
            raise InputError(f"{directory / WEIGHTS_FILE} does not fit {directory / CONFIG_FILE}: {first[0].strip()} "
                             "The two files were not saved together.") from None
        return model

    # ----- initialisation from a causal LM (DiffuLLaMA / Dream's "AR-init") ----------------------------------------
    @classmethod
    def from_causal_lm(cls, hf_directory: str | Path, vocab_size: int, attention: str = "prefix",
                       max_seq_len: int | None = None, seed: int = 0) -> "MaskedDiffusionTransformer":
        """Initialise from a local Llama-style `transformers` causal LM folder, extending its vocabulary (rows of new
        ids start at the mean of the copied rows plus small noise: `unimask.causal_lm`)."""
        from .causal_lm import build_from_causal_lm

        return build_from_causal_lm(cls, hf_directory, vocab_size, attention=attention, max_seq_len=max_seq_len,
                                    seed=seed)

