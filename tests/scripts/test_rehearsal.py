"""`pipeline --rehearse`: the transformation of paper_full.json, the pico builder, the real-row sample, the
paper-scale projection formulas, and (slow) the rehearsal end to end through the deepspeed launcher."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from run_config.assets import cache_dir
from run_config.loader import load_config
from scripts import rehearsal
from scripts.experiment import FULL_CONFIG, TABLE_SCRIPTS, check_sections, table_settings
from scripts.pipeline import PipelineConfig, main
from tests.conftest import REPO_ROOT

LLAMA3_8B = rehearsal.PAPER_MODELS["meta-llama/Meta-Llama-3-8B"]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"


def _paper() -> dict:
    return load_config(FULL_CONFIG, PipelineConfig).model_dump()


def _rehearsal(seeds: int | None = 1) -> dict:
    return rehearsal.rehearsal_config(
        _paper(), work_dir="w", seeds=seeds, base_model="w/pico", rows="w/rows.jsonl", sources=["Urban"]
    )


def test_rehearsal_transforms_the_paper_config_and_keeps_its_setting():
    paper, cfg = _paper(), _rehearsal()
    assert cfg["seeds"] == [21] and _rehearsal(None)["seeds"] == [21, 42, 84]
    assert (cfg["base_model"], cfg["embedder"], cfg["metric_encoder"]) == ("w/pico", "minilm", "asset:minilm")
    assert (cfg["builtin"], cfg["input"], cfg["datasets"]) == (None, ["w/rows.jsonl"], ["Urban", "3D-EX"])
    assert (cfg["launcher"], cfg["num_gpus"], cfg["num_clusters"]) == ("deepspeed", 2, paper["num_clusters"])
    train = cfg["train"]
    for key in ("deepspeed", "gradient_checkpointing", "learning_rate", "lr_scheduler_type", "optim", "cutoff_len"):
        assert train[key] == paper["train"][key], key
    assert train["deepspeed"] == "run_config/ds_zero3.json" and train["max_steps"] == 2
    assert train["dtype"] == "float32" and train["report_to"] == "none"  # train's mixed precision is GPU-only
    bf16 = "bfloat16" if rehearsal.cpu_bf16() else "float32"
    assert cfg["infer"]["dtype"] == bf16 and cfg["merge"]["dtype"] == paper["merge"]["dtype"]
    for section in ("cluster", "reward", "infer", "evaluate"):
        assert cfg[section]["device"] == "cpu", section
    assert cfg["metrics"] == paper["metrics"] and cfg["whole_test_as"] == "3D-EX"
    assert [m["backend"] for m in cfg["tables"]["table2"]["icl_models"]] == ["local"]
    assert paper["embedder"] == "nv-embed-v2" and paper["metric_encoder"] is None  # what was substituted


def test_the_rehearsal_config_passes_every_stage_and_table_check():
    from scripts.fig4 import Fig4Settings
    from scripts.table2 import Table2Settings

    cfg = PipelineConfig.model_validate(_rehearsal())
    check_sections(cfg, "rehearsal")  # every stage section holds only keys (and values) its stage takes
    assert table_settings(cfg, "table2", Table2Settings, "rehearsal").bon_samples == 2
    assert table_settings(cfg, "fig4", Fig4Settings, "rehearsal").items == 4


def test_projection_formulas():
    assert rehearsal.zero3_state_bytes(8e9, 8) == 16e9  # 2 + 2 + 12 bytes per parameter, over 8 GPUs
    shape = rehearsal.Shape(1e9, layers=2, hidden=10, kv_heads=2, head_dim=5, vocab=100)
    sbh = 4 * 3 * 10
    assert rehearsal.activation_bytes(shape, 4, 3, True) == 2 * sbh * 2 + 34 * sbh + 6 * 4 * 3 * 100
    assert rehearsal.activation_bytes(shape, 4, 3, False) == 34 * sbh * 2 + 6 * 4 * 3 * 100
    assert rehearsal.kv_cache_bytes(shape, 4, 3) == 2 * 2 * 2 * 2 * 5 * 4 * 3
    assert rehearsal.gpu_hours(8 * 989e12 * 0.4 * 3600) == pytest.approx(1.0)
    assert rehearsal.moe_params(LLAMA3_8B, 4) == 8.03e9 + 3 * 32 * 3 * 4096 * 14_336  # ~25B, as the issue says


def test_projection_of_the_paper_stages():
    paper = _paper()
    p = rehearsal.project(paper, {"prompt": 20.0, "target": 10.0})
    assert list(p) == ["cluster", "train_experts", "train_dense", "merge", "router", "infer", "evaluate"]
    tokens = rehearsal.PAPER_ROWS["train"] * 30 * paper["train"]["num_train_epochs"]
    assert p["train_experts"].tokens == tokens and p["train_experts"].flops == 6 * LLAMA3_8B.params * tokens
    micro = paper["train"]["per_device_train_batch_size"]
    assert p["train_experts"].memory == 16 * LLAMA3_8B.params / 8 + rehearsal.activation_bytes(
        LLAMA3_8B, 128, micro, True
    )
    line = p["train_experts"].line(10.0, 1000.0)
    assert "10000 µs/token" in line and f"{rehearsal.gpu_hours(p['train_experts'].flops):.2f} h on 8xH100" in line
    assert p["merge"].flops == 0 and "disk-bound" in p["merge"].line(1.0, 0.0)
    seconds = rehearsal.stage_seconds({"train_experts_semantic-N4_seed21": 3.0, "cluster semantic-N4": 1.0})
    assert seconds["train_experts"] == 3.0 and seconds["cluster"] == 1.0 and seconds["infer"] == 0


def test_pico_model_is_the_paper_family_with_the_smollm2_tokenizer(smollm2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = rehearsal.build_pico(tmp_path / "pico", smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(out)
    c = model.config
    assert c.model_type == "llama" and not c.tie_word_embeddings
    assert c.num_key_value_heads < c.num_attention_heads  # GQA
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert len(AutoTokenizer.from_pretrained(out)) == len(AutoTokenizer.from_pretrained(smollm2_dir)) == c.vocab_size


def test_rehearsal_rows_are_real_and_split_by_term(data_3dex, tmp_path):
    from dataset.records import load_records

    path, sources = rehearsal.rehearsal_rows([str(data_3dex / "Urban_test.csv")], tmp_path / "rows.jsonl", n=300)
    rows = load_records(path)
    assert len(rows) == 300 and sources == ["Urban"]
    splits = {s: {r.term.lower() for r in rows if r.split == s} for s in ("train", "valid", "test")}
    assert all(splits.values()) and not (splits["train"] & splits["test"]) and not (splits["train"] & splits["valid"])
    with pytest.raises(Exception, match="no such file"):
        rehearsal.rehearsal_rows([str(tmp_path / "absent.csv")], tmp_path / "x.jsonl")


def test_rehearse_refuses_a_model_without_a_paper_shape_before_any_work(tmp_path, capsys):
    work = tmp_path / "w"
    argv = ["--config", str(FULL_CONFIG), "--rehearse", "--work-dir", str(work), "--base-model", "asset:smollm2"]
    assert main(argv) == 2
    assert "base_model asset:smollm2: no paper-scale shape to project" in capsys.readouterr().err
    assert main(["--config", str(FULL_CONFIG), "--rehearse", "--rehearse-tables", "table9"]) == 2
    assert "--rehearse-tables: unknown script table9" in capsys.readouterr().err
    assert not work.exists()


@pytest.mark.slow
@pytest.mark.skipif(not DEEPSPEED.is_file(), reason="deepspeed launcher not installed")
def test_rehearsal_of_paper_full_end_to_end(data_3dex, smollm2_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the config's relative paths (run_config/ds_zero3.json)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    extensions = str(cache_dir() / "torch_extensions")
    for key, value in {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": extensions}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{DEEPSPEED.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    work = tmp_path / "rehearsal"
    tables = os.environ.get("LMLEXICON_REHEARSE_TABLES", "table7_8 table4").split()
    argv = ["--config", str(FULL_CONFIG), "--rehearse", "--rehearse-seeds", "1", "--work-dir", str(work)]
    argv += ["--rehearse-input", str(data_3dex / "Urban_test.csv"), "--rehearse-tables", *tables]
    assert main(argv) == 0
    out = capsys.readouterr().out
    report = json.loads((work / "report" / "report.json").read_text())
    assert set(report["results"]) == {
        "LM-Lexicon-Dense",
        "LM-Lexicon-MoE (domain routing)",
        "LM-Lexicon-MoE (learned domain router)",
        "LM-Lexicon-MoE (oracle routing, upper bound)",
    }
    for per_dataset in report["results"].values():
        assert set(per_dataset) == {"Urban", "3D-EX"}
    summary = json.loads((work / "dense" / "seed21" / "train_summary.json").read_text())
    assert summary["plan"]["world_size"] == 2  # the deepspeed launcher with 2 CPU ranks
    projection = json.loads((work / "report" / "projection.json").read_text())
    assert len(projection["projection"]) == 7 and all(line in out for line in projection["projection"])
    assert any(step.startswith("train_experts_") for step in projection["step_seconds"])
    assert set(tables) <= set(TABLE_SCRIPTS)
