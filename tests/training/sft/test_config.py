"""Training config: the paper's Table 12 settings, the original LM-Lexicon keys load, bad input is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_config.errors import ConfigError
from run_config.loader import ignored_legacy_keys, load_config
from tests.conftest import REPO_ROOT
from training.deepspeed_config import load_deepspeed_config, zero_stage
from training.sft.config import TrainConfig

# run_config/model_config.json as committed in the original repository (docs/original_code.md).
ORIGINAL_MODEL_CONFIG = {
    "do_train": "True",
    "do_eval": "True",
    "do_predict": "True",
    "model_type": "qwen3",
    "model_name_or_path": "Qwen/Qwen3-8B-Base",
    "run_name": "Qwen3-8B-Base-oxford",
    "data_path_train": "dataset/oxford/train.jsonl",
    "data_path_valid": "dataset/oxford/valid.jsonl",
    "data_path_test": "dataset/oxford/test.jsonl",
    "mask_term": "False",
    "output_dir": "output/Qwen3-8B-Base-oxford",
    "batch_size": 1024,
    "per_device_train_batch_size": 256,
    "per_device_eval_batch_size": 128,
    "num_epochs": 10,
    "learning_rate": 5e-6,
    "cutoff_len": 128,
    "train_on_input": "False",
    "seq2seq_training": "False",
    "trainable_layers": "all",
    "eval_times": 30,
    "eval_samples": 8192,
    "logging_steps": 10,
    "gradient_accumulation_steps": 1,
    "fsdp": "",
    "fsdp_wrap_layer": "",
}


def test_paper_table12_config():
    cfg = load_config(REPO_ROOT / "run_config/expert_llama3_8b.json", TrainConfig)
    assert (cfg.num_train_epochs, cfg.learning_rate, cfg.adam_beta1, cfg.adam_beta2) == (3, 5e-6, 0.9, 0.95)
    assert (cfg.lr_scheduler_type, cfg.warmup_ratio, cfg.weight_decay, cfg.max_grad_norm) == ("cosine", 0.1, 0.01, 1.0)
    assert (cfg.dropout, cfg.precision, cfg.cutoff_len, cfg.global_batch_size * cfg.cutoff_len) == (
        0.1,
        "bf16",
        128,
        524288,
    )
    assert zero_stage(load_deepspeed_config(REPO_ROOT / cfg.deepspeed)) == 3


def test_original_model_config_keys_load(tmp_path: Path):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(ORIGINAL_MODEL_CONFIG, indent=1))
    cfg = load_config(path, TrainConfig)
    assert cfg.train_file == "dataset/oxford/train.jsonl" and cfg.valid_file == "dataset/oxford/valid.jsonl"
    assert (cfg.num_train_epochs, cfg.global_batch_size, cfg.train_on_prompt, cfg.do_validation) == (
        10,
        1024,
        False,
        True,
    )
    assert (cfg.eval_times, cfg.eval_samples, cfg.cutoff_len) == (30, 8192, 128)
    assert "data_path_test" in ignored_legacy_keys(path, TrainConfig)


def test_true_false_strings_only_for_original_keys(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text('{\n "model_name_or_path": "m",\n "output_dir": "o",\n "use_lora": "True"\n}')
    with pytest.raises(ConfigError, match=r"c.json:4: use_lora"):
        load_config(path, TrainConfig)


def test_unknown_key_named_with_line(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text('{\n "model_name_or_path": "m",\n "output_dir": "o",\n "learning_rte": 1e-5\n}')
    with pytest.raises(ConfigError, match=r"c.json:4: learning_rte: unknown key \(did you mean learning_rate"):
        load_config(path, TrainConfig)


def test_deepspeed_scheduler_or_fixed_optimizer_rejected(tmp_path: Path):
    sched = tmp_path / "s.json"
    sched.write_text(json.dumps({"scheduler": {"type": "WarmupLR"}, "zero_optimization": {"stage": 2}}))
    with pytest.raises(ConfigError, match="scheduler"):
        load_deepspeed_config(sched)
    opt = tmp_path / "o.json"
    opt.write_text(json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": "auto"}}}))
    with pytest.raises(ConfigError, match="optimizer.params: lr"):
        load_deepspeed_config(opt)


def test_stage3_always_gathers_weights_on_save(tmp_path: Path):
    path = tmp_path / "z3.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert load_deepspeed_config(path)["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
