"""Teacher and student models: a truncated teacher copy (or a smaller model) with only its last layers trainable."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from run_config.devices import resolve_dtype
from run_config.errors import ConfigError

log = logging.getLogger(__name__)


def load_causal_lm(path: str, dtype: str, device: torch.device, **config_overrides: Any) -> Any:
    """Load a causal LM with `config_overrides` (e.g. `num_hidden_layers`) applied to its config."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device.type), **config_overrides)
    return model.to(device)


def load_teacher(path: str, dtype: str, device: torch.device) -> Any:
    """Load the frozen teacher in eval mode."""
    teacher = load_causal_lm(path, dtype, device)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def decoder_layers(model: Any) -> nn.ModuleList:
    """Return the decoder blocks of a Llama-family causal LM (`model.base_model.layers`)."""
    layers = getattr(model.base_model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__}: cannot find its decoder layers (base_model.layers)")
    return layers


def freeze_all_but_last(model: Any, trainable_layers: int) -> int:
    """Freeze every parameter except those of the last `trainable_layers` decoder layers; return their count."""
    layers = decoder_layers(model)
    if trainable_layers > len(layers):
        raise ConfigError(f"trainable_layers: {trainable_layers} > the student's {len(layers)} layers")
    keep = {id(p) for layer in layers[len(layers) - trainable_layers :] for p in layer.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = sum(p.numel() for layer in layers[len(layers) - trainable_layers :] for p in layer.parameters())
    if n_trainable != expected:
        raise RuntimeError(f"freezing failed: {n_trainable} trainable parameters, expected {expected}")
    return n_trainable


def build_student(
    cfg: Any, teacher_path: str, student_path: str | None, teacher: Any, device: torch.device
) -> tuple[Any, nn.Module | None]:
    """Return (student, projection): the student with only its last layers trainable, and a trainable
    linear map from its width to the teacher's when they differ (None otherwise)."""
    if student_path is None:
        n_layers = cfg.student_layers or max(teacher.config.num_hidden_layers // 2, 1)
        if n_layers > teacher.config.num_hidden_layers:
            raise ConfigError(f"student_layers: {n_layers} > the teacher's {teacher.config.num_hidden_layers} layers")
        student = load_causal_lm(teacher_path, cfg.dtype, device, num_hidden_layers=n_layers)
    else:
        student = load_causal_lm(student_path, cfg.dtype, device)
        if student.config.vocab_size != teacher.config.vocab_size:
            raise ConfigError(
                f"student_model: vocabulary {student.config.vocab_size} != the teacher's "
                f"{teacher.config.vocab_size}; KL distillation needs one tokenizer"
            )
    n_trainable = freeze_all_but_last(student, cfg.trainable_layers)
    student.train()
    projection = None
    if student.config.hidden_size != teacher.config.hidden_size:
        projection = nn.Linear(student.config.hidden_size, teacher.config.hidden_size, bias=False).to(device)
        n_trainable += projection.weight.numel()
    log.info(
        "student: %d layers, %d trainable parameters (last %d layers%s)",
        len(decoder_layers(student)),
        n_trainable,
        cfg.trainable_layers,
        " + projection" if projection is not None else "",
    )
    return student, projection
