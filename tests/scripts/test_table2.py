"""Table 2 on the tiny paper setting: its rows, the paper column, artefact reuse, config and API-key errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from run_config.loader import load_config
from scripts.experiment import FULL_CONFIG, TOY_CONFIG, ExperimentConfig, table_settings
from scripts.paper_numbers import TABLE2
from scripts.table2 import PRIOR_WORK, Table2Settings, build_table, main, summarise
from tests.conftest import REPO_ROOT

ROWS = [
    "tiny Random-ICL",
    "tiny Retrieval-ICL",
    "LM-Lexicon-Dense",
    "LM-Lexicon-Dense + BoN-Oracle",
    "LM-Lexicon-Dense + BoN-ORM",
]


def _with_table2(tiny_paper, tmp_path, settings):
    """A copy of the tiny setting (same work_dir, so artefacts are shared) with `tables.table2` settings."""
    cfg = json.loads(tiny_paper.read_text())
    cfg["tables"] = {"table2": settings}
    cfg["reward"]["max_new_tokens"] = 8
    path = tmp_path / "table2.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def test_table2_rows_paper_column_and_rerun(tiny_paper, tmp_path, capsys):
    cfg = json.loads(tiny_paper.read_text())
    settings = {
        "systems": ["dense"],
        "bon_samples": 2,
        "icl_k": 2,
        "icl_models": [{"name": "tiny", "backend": "local", "model": cfg["base_model"]}],
    }
    path = _with_table2(tiny_paper, tmp_path, settings)
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Table 2 (ours: " in out and "seeds 42" in out and "| LM-Lexicon-Dense + BoN-ORM | paper | 37.73 |" in out
    work = Path(cfg["work_dir"])  # the tiny setting's, shared with the other paper scripts
    report = json.loads((work / "tables" / "table2.json").read_text(encoding="utf-8"))
    assert list(report["ours"]) == ROWS and report["datasets"] == ["WordNet"]
    for row in ROWS:
        cell = report["ours"][row]["WordNet"]
        assert set(cell) == {"bleu", "rougeL"} and all(0 <= cell[m]["mean"] <= 100 for m in cell)
    assert report["paper"]["LM-Lexicon-Dense"]["WordNet"]["bleu"] == list(TABLE2["LM-Lexicon-Dense"]["WordNet"]["bleu"])
    assert report["paper"]["tiny Random-ICL"]["WordNet"]["bleu"] == [None, None]
    assert set(PRIOR_WORK) <= set(report["paper"])
    md = (work / "tables" / "table2.md").read_text(encoding="utf-8").splitlines()
    ours = [line for line in md if "| ours |" in line]
    assert len(ours) == len(ROWS) and all("–" not in line for line in ours)
    assert "| Rerank-T5 (2021) | paper | 30.91 | 30.99 |" in md  # one dataset: no Avg. columns
    assert "| tiny Random-ICL | paper | – | – |" in md
    oracle, orm = (report["ours"][f"LM-Lexicon-Dense + BoN-{v}"]["WordNet"]["bleu"]["mean"] for v in ("Oracle", "ORM"))
    assert oracle >= orm  # both pick from the same N samples; the oracle maximises the scored BLEU
    metrics = (work / "tables" / "table2_metrics.csv").read_text(encoding="utf-8").splitlines()
    assert metrics[0] == "method,dataset,metric,mean,std,seeds,paper" and len(metrics) == 1 + 2 * len(ROWS)

    weights = sorted(work.rglob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    assert main(["--config", str(path)]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps


def test_unknown_table2_key_names_the_file(tiny_paper, tmp_path, capsys):
    path = _with_table2(tiny_paper, tmp_path, {"bon_sample": 2})
    assert main(["--config", str(path)]) == 2
    assert f"{path}: tables.table2.bon_sample: unknown key" in capsys.readouterr().err


def test_an_api_key_in_place_of_its_env_name_is_refused_unseen(tiny_paper, tmp_path, capsys):
    key = "sk-proj-Zq3vN8xWc2LmT5rYb7KdE1fGh4JpS6uA9oI0eXnM"
    path = _with_table2(
        tiny_paper, tmp_path, {"icl_models": [{"name": "GPT", "backend": "openai", "model": "m", "api_key_env": key}]}
    )
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tables.table2.icl_models.0.api_key_env: takes the name of the environment variable" in err
    assert key[:8] not in err


def test_missing_api_key_fails_before_any_work(tmp_path, monkeypatch, capsys):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "set")
    work = tmp_path / "work"
    assert main(["--work-dir", str(work)]) == 2  # the full-scale config: the paper's three API models
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert (
        "tables.table2.icl_models.0 (GPT-4-Turbo): backend openai: set the API key in the environment "
        "variable OPENAI_API_KEY" in err
    )
    assert "GEMINI_API_KEY" in err and "ANTHROPIC" not in err and not work.exists()


def test_sacrebleu_column_needs_the_metric_and_fails_before_any_work(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["--toy", "--work-dir", str(work), "--set", "tables.table2.report_sacrebleu=true"]) == 2
    err = capsys.readouterr().err
    assert 'tables.table2.report_sacrebleu: needs "sacrebleu" in metrics (now bleu, rouge, meteor' in err
    assert not work.exists()


def test_sacrebleu_column_after_bleu_blank_for_the_paper():
    ours = {
        "LM-Lexicon-Dense": {
            "WordNet": {
                "bleu": {"mean": 40.0, "std": 0.5},
                "rougeL": {"mean": 41.0, "std": 0.0},
                "sacrebleu": {"mean": 12.5, "std": 0.25},
            }
        }
    }
    table = build_table(ours, ["WordNet"], prior_work=False, report_sacrebleu=True)
    assert table.header == ["Method", "Run", "WordNet BLEU", "WordNet sacreBLEU", "WordNet ROUGE"]  # one: no Avg.
    assert table.rows[0] == ["LM-Lexicon-Dense", "ours", "40.00±0.50", "12.50±0.25", "41.00"]
    assert table.rows[1][2:5] == ["36.99±0.59", "–", "37.83±0.45"]  # the paper reports no standard BLEU
    both = {
        "LM-Lexicon-Dense": {
            "WordNet": ours["LM-Lexicon-Dense"]["WordNet"],
            "Urban": {
                "bleu": {"mean": 20.0, "std": 0.0},
                "rougeL": {"mean": 21.0, "std": 0.0},
                "sacrebleu": {"mean": 2.5, "std": 0.0},
            },
        }
    }
    two = build_table(both, ["WordNet", "Urban"], prior_work=False, report_sacrebleu=True)
    assert two.header[-3:] == ["Avg. BLEU", "Avg. sacreBLEU", "Avg. ROUGE"]
    assert two.rows[0][-3:] == ["30.00", "7.50", "31.00"]
    assert build_table(ours, ["WordNet"], prior_work=False).header[2:4] == ["WordNet BLEU", "WordNet ROUGE"]


def test_report_ci_prints_half_the_bootstrap_interval_for_ours_only():
    ours = {
        "LM-Lexicon-Dense": {
            "WordNet": {
                "bleu": {"mean": 40.0, "std": 0.5, "ci95": [38.0, 43.0]},
                "rougeL": {"mean": 41.0, "std": 0.2, "ci95": [40.5, 41.5]},
                "sacrebleu": {"mean": 12.5, "std": 0.25},  # a cell without a CI (a MAUVE-like corpus metric)
            }
        }
    }
    table = build_table(ours, ["WordNet"], prior_work=False, report_sacrebleu=True, report_ci=True)
    assert table.rows[0] == ["LM-Lexicon-Dense", "ours", "40.00±2.50", "12.50", "41.00±0.50"]
    assert table.rows[1][2:5] == ["36.99±0.59", "–", "37.83±0.45"]  # the paper's line keeps its std
    assert build_table(ours, ["WordNet"], prior_work=False).rows[0][2:4] == ["40.00±0.50", "41.00±0.20"]


def test_summarise_keeps_the_ci_of_each_metric():
    scores = {
        "systems": {"m": {"seeds": [{"seed": 21, "scores": {"bleu": 30.0, "rougeL": 31.0, "sacrebleu": 5.0}}]}},
        "ci95": {"bootstrap_samples": 1000, "seed": 42, "systems": {"m": {"bleu": [28.0, 32.0], "rougeL": [30, 32]}}},
    }
    cell = summarise({"LM-Lexicon-Dense": {"WordNet": scores}})["LM-Lexicon-Dense"]["WordNet"]
    assert cell["bleu"]["ci95"] == [28.0, 32.0] and "ci95" not in cell["sacrebleu"]


def test_shipped_configs_hold_valid_table2_settings():
    full = table_settings(load_config(FULL_CONFIG, ExperimentConfig), "table2", Table2Settings, str(FULL_CONFIG))
    assert [m.backend for m in full.icl_models] == ["openai", "anthropic", "gemini"] and full.icl_k == 32
    toy = table_settings(load_config(TOY_CONFIG, ExperimentConfig), "table2", Table2Settings, str(TOY_CONFIG))
    assert [m.backend for m in toy.icl_models] == ["local"]


def test_help_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "scripts.table2", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert "Table 2 of the paper" in done.stdout and "--toy" in done.stdout


@pytest.mark.slow
def test_table2_moe_rows_run_best_of_n_on_the_routed_moe(tiny_paper, tmp_path, capsys):
    path = _with_table2(tiny_paper, tmp_path, {"systems": ["moe"], "bon_samples": 2, "icl_models": []})
    assert main(["--config", str(path)]) == 0
    work = Path(json.loads(path.read_text())["work_dir"])
    report = json.loads((work / "tables" / "table2.json").read_text(encoding="utf-8"))
    rows = ["LM-Lexicon-MoE", "LM-Lexicon-MoE + BoN-Oracle", "LM-Lexicon-MoE + BoN-ORM"]
    assert list(report["ours"]) == rows
    samples = (work / "infer" / "moe-bon2" / "WordNet" / "seed42" / "samples.jsonl").read_text().splitlines()
    per_item = {}
    for line in samples:
        row = json.loads(line)
        per_item.setdefault(row["id"], set()).add(row["sample_idx"])
    assert len(per_item) == 4 and all(idx == {0, 1} for idx in per_item.values())
    bleu = [report["ours"][r]["WordNet"]["bleu"]["mean"] for r in rows[1:]]
    assert bleu[0] >= bleu[1]
    assert (work / "orm" / "moe" / "seed42" / "model" / "config.json").is_file()
