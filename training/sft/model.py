"""Load the tokenizer and the causal LM to finetune: dropout, freezing, LoRA / QLoRA, merged export."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from run_config.devices import resolve_device, resolve_dtype
from run_config.errors import ConfigError
from training.sft.config import TrainConfig

log = logging.getLogger(__name__)

# Dropout fields of HF model configs (Llama/Qwen/Mistral: attention_dropout; GPT-2: *_pdrop; BERT-like: *_prob).
DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "activation_dropout",
    "attn_pdrop",
    "resid_pdrop",
    "embd_pdrop",
    "attention_probs_dropout_prob",
    "hidden_dropout_prob",
)


def load_tokenizer(cfg: TrainConfig) -> Any:
    """The tokenizer of the model (BOS/EOS/pad come from it, never hard-coded ids)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    if tok.eos_token is None:
        raise ConfigError(f"tokenizer of {cfg.model_name_or_path} has no EOS token; definitions could not end")
    return tok


def apply_dropout(model_config: Any, p: float) -> list[str]:
    """Set every dropout field that `model_config` has to `p`; return the fields set."""
    fields = [f for f in DROPOUT_FIELDS if isinstance(getattr(model_config, f, None), (int, float))]
    for f in fields:
        setattr(model_config, f, p)
    return fields


def freeze_except(model: torch.nn.Module, trainable_layers: str) -> int:
    """Train only parameters whose name contains one of the comma-separated substrings ('all': every one).

    Returns the number of trainable parameters; raises when the pattern matches nothing.
    """
    if trainable_layers.strip() == "all":
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    keys = [k.strip() for k in trainable_layers.split(",") if k.strip()]
    for name, p in model.named_parameters():
        p.requires_grad_(any(k in name for k in keys))
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise ConfigError(f"trainable_layers: {trainable_layers!r} matches no parameter name")
    return n


def _quantization_config(cfg: TrainConfig) -> Any:
    if not resolve_device(cfg.device).startswith("cuda"):
        raise ConfigError("qlora: 4-bit QLoRA needs a CUDA GPU; use LoRA (qlora false) on this machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise ConfigError("qlora: needs bitsandbytes (pip install bitsandbytes)") from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_model(cfg: TrainConfig) -> torch.nn.Module:
    """Load the base model with the configured dropout; wrap it in LoRA adapters when asked.

    Under ZeRO-3 this must run after TrainingArguments exist (zero.Init partitions while loading).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(cfg.model_name_or_path)
    fields = apply_dropout(model_config, cfg.dropout)
    if fields:
        log.info("dropout %.2f -> %s", cfg.dropout, ", ".join(fields))
    else:
        log.warning("%s has no dropout field; dropout %.2f not applied", type(model_config).__name__, cfg.dropout)
    kwargs: dict[str, Any] = {"config": model_config, "dtype": resolve_dtype(cfg.dtype, resolve_device(cfg.device))}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.qlora:
        kwargs["quantization_config"] = _quantization_config(cfg)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kwargs)
    if cfg.use_lora:
        return add_lora(model, cfg)
    n = freeze_except(model, cfg.trainable_layers)
    log.info("trainable parameters: %d", n)
    return model


def add_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """Wrap `model` in LoRA adapters (after k-bit preparation for QLoRA)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %d of %d parameters trainable (%.2f %%)", trainable, total, 100 * trainable / total)
    return model


def export_merged(base: str, adapter_dir: str | Path, out_dir: str | Path, dtype: torch.dtype) -> None:
    """Reload the base in full precision (never from 4-bit), merge the saved adapters, save an HF folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir), safe_serialization=True)
