"""Causal LMs: built from a small spec or loaded with `from_pretrained`; optional LoRA; the one FLOP formula."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from proxymix.config import ConfigError, ModelConfig


def build_config(spec: ModelConfig, vocab_size: int, pad_id: int, eos_id: int, max_positions: int = 128):
    """A transformers config for `spec.family` with the given width/depth (random init, no download)."""
    h, n, heads = spec.hidden, spec.n_layers, spec.n_heads
    common = dict(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
                  tie_word_embeddings=True)
    if spec.family in ("llama", "qwen2"):
        return AutoConfig.for_model(
            spec.family, hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=heads,
            intermediate_size=spec.intermediate or 2 * h, max_position_embeddings=max_positions, **common)
    if spec.family == "gpt2":
        return AutoConfig.for_model(
            "gpt2", n_embd=h, n_layer=n, n_head=heads, n_inner=spec.intermediate or 4 * h, n_positions=max_positions,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    if spec.family == "gpt_neox":
        return AutoConfig.for_model(
            "gpt_neox", hidden_size=h, num_hidden_layers=n, num_attention_heads=heads,
            intermediate_size=spec.intermediate or 4 * h, max_position_embeddings=max_positions,
            hidden_dropout=0.0, attention_dropout=0.0, **common)
    raise ConfigError(f"model.family {spec.family!r} is not supported")


def build_model(spec: ModelConfig, vocab_size: int, pad_id: int, eos_id: int, seed: int) -> PreTrainedModel:
    """Build (seeded random init) or load the model, then wrap it with LoRA adapters if asked."""
    if spec.path is not None:
        path = Path(spec.path)
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.path {path}: no config.json (expected a directory saved with save_pretrained)")
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    else:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(build_config(spec, vocab_size, pad_id, eos_id))
    model.generation_config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    if spec.lora:
        model = add_lora(model, spec)
    return model


def add_lora(model: PreTrainedModel, spec: ModelConfig):
    """LoRA on every linear layer of the blocks (peft's 'all-linear'); base weights are frozen by peft."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                     target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Parameters, counting tied (shared) tensors once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def train_flops(n_params: int, tokens: int) -> float:
    """Training FLOPs ~ 6 N D (forward 2ND + backward 4ND; Kaplan et al. 2020)."""
    return 6.0 * n_params * tokens


def eval_flops(n_params: int, tokens: int) -> float:
    """Forward-only FLOPs ~ 2 N D (validation losses and generation)."""
    return 2.0 * n_params * tokens
