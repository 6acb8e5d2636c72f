"""The toy pipeline end to end on a slice of the embedded lexicon, its rerun, and its config errors."""

from __future__ import annotations

import json

import pytest

from scripts.experiment import TABLE_METRICS
from scripts.pipeline import main
from tests.conftest import REPO_ROOT

TOY = REPO_ROOT / "run_config" / "pipeline_toy.json"


@pytest.mark.slow
def test_toy_pipeline_fills_every_metric_and_reruns_from_artefacts(wordnet_lexicon, smollm2_dir, tmp_path, capsys):
    work = tmp_path / "toy"
    assert main(["--config", str(TOY), "--work-dir", str(work)]) == 0
    report = json.loads((work / "report" / "report.json").read_text())
    assert set(report["results"]) == {
        "LM-Lexicon-Dense",
        "LM-Lexicon-MoE (domain routing)",
        "LM-Lexicon-MoE (learned domain router)",
        "LM-Lexicon-MoE (oracle routing, upper bound)",
    }
    for per_dataset in report["results"].values():
        (scores,) = per_dataset["WordNet"]
        assert set(scores) == set(TABLE_METRICS) and all(v == v for v in scores.values())
    table = (work / "report" / "table2.md").read_text()
    assert "–" not in table and "LM-Lexicon-MoE (domain routing)" in table
    bleu = report["ci95"]["LM-Lexicon-MoE (domain routing)"]["WordNet"]["bleu"]
    assert f"±{(bleu[1] - bleu[0]) / 2:.2f}" in table  # cells carry the bootstrap CI, not the std
    oracle = report["oracle_routing"]["WordNet"]
    assert oracle["regret"]["bleu"] == pytest.approx(oracle["oracle"]["bleu"] - oracle["routed"]["bleu"])
    best = report["results"]["LM-Lexicon-MoE (oracle routing, upper bound)"]["WordNet"][0]["bleu"]
    routed = report["results"]["LM-Lexicon-MoE (domain routing)"]["WordNet"][0]["bleu"]
    assert best >= routed  # the oracle picks each input's best expert by BLEU
    for name in ("oracle_report.md", "expert_cluster.png"):
        assert (work / "report" / "oracle" / "WordNet" / name).stat().st_size > 0
    per_expert = (work / "report" / "table_expert_moe_WordNet.md").read_text()
    assert per_expert.count("\n") >= 4  # header, rule and a row per expert that answered
    weights = sorted((work / "experts").rglob("*.safetensors")) + sorted((work / "moe").rglob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    capsys.readouterr()
    assert main(["--config", str(TOY), "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "train: 2 experts (2 skipped (finished)) -> " in out and out.count("up to date") >= 4
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps


def test_section_errors_name_the_pipeline_file(tmp_path, capsys):
    cfg = json.loads(TOY.read_text())
    cfg["work_dir"] = str(tmp_path / "w")
    cfg["cluster"] = {"num_clusterz": 3}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(cfg))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cluster.num_clusterz: unknown key (did you mean num_clusters?)" in err


def test_a_wrong_type_in_a_late_section_fails_before_the_first_step(tmp_path, capsys):
    cfg = json.loads(TOY.read_text())
    cfg["work_dir"] = str(tmp_path / "w")
    cfg["cluster"] = {**cfg.get("cluster", {}), "batch_size": "64"}
    cfg["evaluate"] = {"bootstrap_samples": 1.5}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(cfg))
    assert main(["--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert f'{path}: cluster.batch_size: input should be a valid integer, got "64"' in err
    assert "evaluate.bootstrap_samples: input should be a valid integer, got 1.5" in err
    assert len(err.strip().splitlines()) == 1 and "[experiment]" not in out
    assert not (tmp_path / "w").exists()  # no step ran: nothing preprocessed, nothing trained


def test_pipeline_config_rejects_unknown_top_level_key(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"work_dir": "w", "num_expert": 4}))
    assert main(["--config", str(path)]) == 2
    assert "num_expert: unknown key" in capsys.readouterr().err
