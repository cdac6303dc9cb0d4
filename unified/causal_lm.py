"""Copy a local Llama-style causal LM into a MaskedDiffusionTransformer (the "AR-init" of DiffuLLaMA / Dream).

The block layout is the same (RMSNorm, rotary in the half-split layout, SwiGLU), so every weight maps one to one;
only the attention pattern changes (bidirectional instead of causal) and the vocabulary grows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

SUPPORTED_MODEL_TYPES = ("llama",)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope type {rope_type!r} is not supported for AR-init; only plain rotary ('default').")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ValueError("the causal LM config names no rope_theta.")
    return float(theta)


def build_from_causal_lm(cls: Any, hf_directory: str | Path, vocab_size: int, attention: str = "prefix",
                         max_seq_len: int | None = None, seed: int = 0) -> Any:
    """A `cls` model (MaskedDiffusionTransformer) whose weights come from a local Llama-style causal LM folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_directory = Path(hf_directory)
    if not (hf_directory / "config.json").is_file():
        raise FileNotFoundError(f"{hf_directory} has no config.json; give a local transformers model folder.")
    hf_config = AutoConfig.from_pretrained(str(hf_directory), local_files_only=True)
    if hf_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"AR-init supports model types {SUPPORTED_MODEL_TYPES}, got {hf_config.model_type!r}.")
    if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
        raise ValueError("AR-init needs a bias-free Llama (attention_bias and mlp_bias false).")
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    if head_dim * hf_config.num_attention_heads != hf_config.hidden_size:
        raise ValueError("AR-init needs head_dim * num_attention_heads == hidden_size.")
    lm_vocab = hf_config.vocab_size
    if vocab_size < lm_vocab:
        raise ValueError(f"`vocab_size` ({vocab_size}) must be >= the causal LM's vocabulary ({lm_vocab}): "
                         "the unified vocabulary extends the LM's, it cannot shrink it.")
    config = cls.config_class(
        vocab_size=vocab_size,
        d_model=hf_config.hidden_size,
        n_layers=hf_config.num_hidden_layers,
        n_heads=hf_config.num_attention_heads,
        n_kv_heads=hf_config.num_key_value_heads,
        ffn_hidden=hf_config.intermediate_size,
        max_seq_len=max_seq_len or hf_config.max_position_embeddings,
        rope_theta=_rope_theta(hf_config),
        norm_eps=hf_config.rms_norm_eps,
        tie_embeddings=bool(hf_config.tie_word_embeddings),
        attention=attention,
    )
    lm = AutoModelForCausalLM.from_pretrained(str(hf_directory), local_files_only=True, torch_dtype=torch.float32)
    source = lm.state_dict()
    model = cls(config)
    target = model.state_dict()
    mapping = {"embed_tokens.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        mapping["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layers):
        for ours, theirs in (("attn.q_proj", "self_attn.q_proj"), ("attn.k_proj", "self_attn.k_proj"),
                             ("attn.v_proj", "self_attn.v_proj"), ("attn.o_proj", "self_attn.o_proj"),
                             ("mlp.gate_proj", "mlp.gate_proj"), ("mlp.up_proj", "mlp.up_proj"),
                             ("mlp.down_proj", "mlp.down_proj"), ("attn_norm", "input_layernorm"),
                             ("mlp_norm", "post_attention_layernorm")):
            mapping[f"blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ours, theirs in mapping.items():
            weight = source[theirs]
            if ours in ("embed_tokens.weight", "lm_head.weight"):
                extended = target[ours]
                extended[:lm_vocab] = weight
                noise = torch.randn(vocab_size - lm_vocab, weight.shape[1], generator=generator)
                extended[lm_vocab:] = weight.mean(dim=0) + noise * weight.std() * 0.1
            else:
                if target[ours].shape != weight.shape:
                    raise ValueError(f"shape mismatch for {theirs}: {tuple(weight.shape)} vs {tuple(target[ours].shape)}.")
                target[ours].copy_(weight)
    model.load_state_dict(target)
    return model
