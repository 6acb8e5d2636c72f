"""scripts/table3.py on the tiny paper setting: one row per partition, p-values vs semantic, paper numbers, rerun."""

from __future__ import annotations

import json
from pathlib import Path

from run_config.loader import load_config
from scripts.experiment import FULL_CONFIG, TOY_CONFIG, ExperimentConfig, table_settings
from scripts.paper_numbers import TABLE3
from scripts.table3 import Table3Settings, main
from tests.scripts.ablation_helpers import config_with_tables, weight_stamps


def test_table3_scores_each_partition_against_semantic_and_reruns_from_artefacts(tiny_paper, tmp_path, capsys):
    config = config_with_tables(
        tiny_paper, tmp_path / "t3.json", {"table3": {"partitions": ["semantic", "none", "random"]}}
    )
    assert main(["--config", str(config)]) == 0
    work = Path(json.loads(config.read_text())["work_dir"])
    report = json.loads((work / "tables" / "table3.json").read_text())
    rows = {r["partition"]: r for r in report["rows"]}
    assert list(rows) == ["semantic", "none", "random"] and {r["dataset"] for r in rows.values()} == {"WordNet"}
    assert (rows["semantic"]["n"], rows["none"]["n"], rows["random"]["n"]) == (2, 1, 2)
    assert rows["semantic"]["system"] == "moe" and rows["semantic"]["p"] is None
    for r in rows.values():
        assert all(0 <= r[m][0] <= 100 for m in ("bleu", "rougeL"))
    for name in ("none", "random"):
        assert all(0 <= p <= 1 for test in rows[name]["p"].values() for p in test.values())
    md = (work / "tables" / "table3.md").read_text()
    assert md.count("\n") == 2 + 3 and "| BLEU (ours) | BLEU (paper) |" in md
    (bleu, _), (rouge, _), p = TABLE3["none"]
    assert f"{bleu:.2f}±0.20 | " in md and f"{rouge:.2f}±0.30 | " in md and f"{p:.1e}" in md
    assert f"{rows['none']['p']['ttest']['bleu']:.1e}" in md
    out = capsys.readouterr().out
    assert "Table 3 (data partition ablation). Ours:" in out and "scored on WordNet" in out and md in out

    stamps = weight_stamps(work)
    assert len(stamps) == 5 + 2  # 2 + 1 + 2 experts, 2 merged MoEs
    assert main(["--config", str(config)]) == 0
    assert weight_stamps(work) == stamps
    assert capsys.readouterr().out.count("is up to date") >= 3 * 2  # every evaluate and cluster step


def test_table3_setting_errors_name_file_and_key(tiny_paper, tmp_path, capsys):
    config = config_with_tables(tiny_paper, tmp_path / "bad.json", {"table3": {"partitionz": ["semantic"]}})
    assert main(["--config", str(config)]) == 2
    assert f"{config}: tables.table3.partitionz" in capsys.readouterr().err
    config = config_with_tables(tiny_paper, tmp_path / "bad2.json", {"table3": {"datasets": ["Oxford"]}})
    assert main(["--config", str(config)]) == 2
    assert f"{config}: tables.table3.datasets: unknown test set 'Oxford' (one of WordNet)" in capsys.readouterr().err


def test_shipped_configs_hold_valid_table3_settings():
    for path in (TOY_CONFIG, FULL_CONFIG):
        s = table_settings(load_config(path, ExperimentConfig), "table3", Table3Settings, str(path))
        assert len(s.partitions) == 4
