"""Fixtures of the training tests: real Urban rows as train/valid splits, a tiny random Llama."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from dataset.readers import iter_3dex_csv
from dataset.records import Record


def urban_records(data_3dex: Path, n: int) -> list[Record]:
    """The first `n` records of the real Urban test file."""
    items = (it for _, it in iter_3dex_csv(data_3dex / "Urban_test.csv"))
    return list(itertools.islice((it for it in items if isinstance(it, Record)), n))


def write_split(path: Path, records: list[Record], split: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(dataclasses.replace(r, split=split).to_json() + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def urban_splits(data_3dex: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """~200 real Urban rows as train.jsonl and 24 further rows as valid.jsonl."""
    records = urban_records(data_3dex, 224)
    root = tmp_path_factory.mktemp("urban")
    return write_split(root / "train.jsonl", records[:200], "train"), write_split(
        root / "valid.jsonl", records[200:], "valid"
    )


@pytest.fixture(scope="session")
def tiny_llama(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random LlamaForCausalLM with the real SmolLM2 tokenizer (saved HF folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_args(model: Path, train: Path, valid: Path, out: Path, *extra: str) -> list[str]:
    """Command line of a few-second run on the tiny model."""
    return [
        "--model-name-or-path",
        str(model),
        "--train-file",
        str(train),
        "--valid-file",
        str(valid),
        "--output-dir",
        str(out),
        "--precision",
        "fp32",
        "--cutoff-len",
        "64",
        "--per-device-train-batch-size",
        "4",
        "--per-device-eval-batch-size",
        "4",
        "--learning-rate",
        "1e-3",
        "--max-steps",
        "4",
        "--eval-times",
        "2",
        "--eval-samples",
        "4",
        "--eval-max-new-tokens",
        "4",
        "--logging-steps",
        "1",
        *extra,
    ]


def experts_args(model: Path, clusters: Path, out: Path, *extra: str) -> list[str]:
    """`tiny_args` of a run with `--experts clusters` (each expert's train/valid files come from its cluster)."""
    args = tiny_args(model, clusters, clusters, out, *extra)
    for flag in ("--train-file", "--valid-file"):
        i = args.index(flag)
        del args[i : i + 2]
    return [*args, "--experts", str(clusters)]
