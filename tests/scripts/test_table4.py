"""scripts/table4.py on the tiny paper setting: policy rows beside the paper's, p-values, rerun, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.paper_numbers import TABLE4
from scripts.table4 import main


def _config(tiny_paper, tmp_path, table4):
    cfg = json.loads(tiny_paper.read_text())
    cfg["tables"] = {"table4": table4}
    path = tmp_path / "table4.json"
    path.write_text(json.dumps(cfg))
    return path, cfg["work_dir"]


def test_table4_rows_pvalues_and_rerun(tiny_paper, tmp_path, capsys):
    path, work = _config(tiny_paper, tmp_path, {"policies": ["token-top1", "domain", "hard-sequence"]})
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    tables = Path(work) / "tables"
    result = json.loads((tables / "table4.json").read_text())
    assert [r["policy"] for r in result["rows"]] == ["domain", "token-top1", "hard-sequence"]
    assert result["dataset"] == "WordNet" and "3 semantic" not in result["setting"]
    for row in result["rows"]:
        assert 0 <= row["bleu"] <= 100 and 0 <= row["rougeL"] <= 100
        if row["policy"] == "domain":
            assert row["p_ttest"] is None
        else:
            assert 0 <= row["p_ttest"] <= 1 and 0 < row["p_bootstrap"] <= 1
    routing = {r["policy"]: json.loads((Path(r["models"]["42"]) / "routing.json").read_text()) for r in result["rows"]}
    assert routing["token-top1"]["policy"] == "token" and routing["token-top1"]["top_k"] == 1
    assert routing["hard-sequence"]["policy"] == "hard-sequence" and routing["domain"]["policy"] == "domain"
    md = (tables / "table4.md").read_text()
    assert "| top-1 token-level |" in md and "| 43.12±0.40 |" in md and "| 1.9e-3 |" in md
    assert f"| {TABLE4['sequence'][0][0]:.2f}±0.20 |" in md and "Table 4 — routing policy ablation" in out
    csv_rows = (tables / "table4.csv").read_text().splitlines()
    assert csv_rows[0].startswith("Setting,BLEU (ours),BLEU (paper)") and len(csv_rows) == 4
    weights = sorted(Path(work).rglob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    assert main(["--config", str(path)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in Path(work).rglob("*.safetensors")} == stamps
    assert json.loads((tables / "table4.json").read_text())["rows"] == result["rows"]


@pytest.mark.parametrize(
    ("table4", "message"),
    [
        ({"policy": ["domain"]}, "tables.table4.policy: unknown key"),
        ({"policies": ["token-top1"]}, "policies must include domain"),
        ({"policies": ["domain", "token-top3"]}, "tables.table4.policies"),
    ],
)
def test_table4_settings_errors_name_file_and_key(tiny_paper, tmp_path, capsys, table4, message):
    path, _ = _config(tiny_paper, tmp_path, table4)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
