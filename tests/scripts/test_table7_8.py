"""scripts/table7_8.py on the tiny paper setting: the cluster report's distances beside the paper's Tables 7/8.

The test reuses the shared term+context clusters (`text_field` override): clustering with the paper's
instruction_definition text routes the whole test split once more; its own folder name is tested in
test_experiment.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from run_config.loader import load_config
from scripts.experiment import FULL_CONFIG, TOY_CONFIG, ExperimentConfig, table_settings
from scripts.paper_numbers import TABLE7, TABLE8
from scripts.table7_8 import Table78Settings, main
from tests.scripts.ablation_helpers import config_with_tables


def test_table7_8_prints_the_cluster_report_beside_the_paper(tiny_paper, tmp_path, capsys):
    config = config_with_tables(tiny_paper, tmp_path / "t78.json", {"table7_8": {"text_field": "term_context"}})
    assert main(["--config", str(config)]) == 0
    work = Path(json.loads(config.read_text())["work_dir"])
    report = json.loads((work / "clusters" / "semantic-N2" / "report.json").read_text())
    assert report["embedder"]["text_field"] == "term_context"
    out = json.loads((work / "tables" / "table7_8.json").read_text())
    for key in ("cohesion", "separation", "paper_intra_distance", "paper_inter_distance"):
        assert out[key] == report[key]
    t7 = (work / "tables" / "table7.md").read_text()
    intra, cohesion = report["paper_intra_distance"], report["cohesion"]
    for j in range(2):
        assert (
            f"| C{j} | {report['sizes'][j]} | {', '.join(report['examples'][j])} | "
            f"{intra['per_cluster'][j]:.3f} | {cohesion['per_cluster'][j]:.3f} |"
        ) in t7
    assert f"| avg | 60 |  | {intra['mean']:.3f} | {cohesion['mean']:.3f} | avg | {TABLE7['avg']:.3f} |" in t7
    assert "| – | – | – | – | – | C3 Person Name | 0.185 |" in t7  # the paper's 4 clusters, ours 2
    t8 = (work / "tables" / "table8.md").read_text()
    inter = report["paper_inter_distance"]["per_pair"]["0-1"]
    assert f"| C0–C1 | {inter:.3f} | {report['separation']['per_pair']['0-1']:.3f} | C0–C1 | 0.694 |" in t8
    assert t8.count("\n") == 2 + len(TABLE8)
    printed = capsys.readouterr().out
    assert t7 in printed and t8 in printed and "minilm embeddings of term_context (semantic-N2)" in printed


def test_table7_8_rejects_an_unknown_text_field(tiny_paper, tmp_path, capsys):
    config = config_with_tables(tiny_paper, tmp_path / "bad.json", {"table7_8": {"text_field": "gloss"}})
    assert main(["--config", str(config)]) == 2
    assert f"{config}: tables.table7_8.text_field" in capsys.readouterr().err


def test_shipped_configs_hold_valid_table7_8_settings():
    for path in (TOY_CONFIG, FULL_CONFIG):
        s = table_settings(load_config(path, ExperimentConfig), "table7_8", Table78Settings, str(path))
        assert s.text_field == "instruction_definition"
