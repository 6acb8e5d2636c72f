"""scripts/fig5.py on the tiny paper setting: one point per N, the PNG, the paper's BLEU beside ours, rerun."""

from __future__ import annotations

import json
from pathlib import Path

from run_config.loader import load_config
from scripts.experiment import FULL_CONFIG, TOY_CONFIG, ExperimentConfig, table_settings
from scripts.fig5 import Fig5Settings, main
from scripts.paper_numbers import FIG5_BLEU
from tests.scripts.ablation_helpers import config_with_tables, weight_stamps


def test_fig5_plots_each_number_of_experts_and_reruns_from_artefacts(tiny_paper, tmp_path, capsys):
    config = config_with_tables(tiny_paper, tmp_path / "f5.json", {"fig5": {"num_experts": [1, 2]}})
    assert main(["--config", str(config)]) == 0
    tables = Path(json.loads(config.read_text())["work_dir"]) / "tables"
    png = tables / "fig5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = json.loads((tables / "fig5.json").read_text())
    rows = {r["n"]: r for r in report["rows"]}
    assert list(rows) == [1, 2] and rows[1]["system"] == "moe-none-N1" and rows[2]["system"] == "moe"
    assert all(0 <= rows[n][m][0] <= 100 for n in rows for m in ("bleu", "rougeL"))
    assert 0 <= rows[1]["p"]["ttest"]["bleu"] <= 1 and rows[2]["p"] is None
    md = (tables / "fig5.md").read_text()
    assert f"| 1 | {rows[1]['bleu'][0]:.2f} | {FIG5_BLEU[1]:.2f} | {rows[1]['rougeL'][0]:.2f} |" in md
    assert f"| 2 | {rows[2]['bleu'][0]:.2f} | – |" in md
    assert md in capsys.readouterr().out

    stamps = weight_stamps(tables.parent)
    assert main(["--config", str(config)]) == 0
    assert weight_stamps(tables.parent) == stamps


def test_fig5_rejects_a_bad_number_of_experts(tiny_paper, tmp_path, capsys):
    config = config_with_tables(tiny_paper, tmp_path / "bad.json", {"fig5": {"num_experts": [0, 2]}})
    assert main(["--config", str(config)]) == 2
    assert f"{config}: tables.fig5" in capsys.readouterr().err


def test_shipped_configs_hold_valid_fig5_settings():
    toy = table_settings(load_config(TOY_CONFIG, ExperimentConfig), "fig5", Fig5Settings, str(TOY_CONFIG))
    full = table_settings(load_config(FULL_CONFIG, ExperimentConfig), "fig5", Fig5Settings, str(FULL_CONFIG))
    assert toy.num_experts == [1, 2, 4] and full.num_experts == [1, 2, 4, 8]
