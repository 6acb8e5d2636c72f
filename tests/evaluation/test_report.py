"""Table 2 rendering, mean ± std over seeds, the report CLI and significance tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.report import main, mean_std, table2
from evaluation.significance import paired_bootstrap, paired_ttest

RESULTS = {
    "LM-Lexicon-Dense": {
        "WordNet": [{"bleu": 36.4, "rougeL": 37.4}, {"bleu": 37.0, "rougeL": 37.8}, {"bleu": 37.6, "rougeL": 38.3}],
        "Urban": [{"bleu": 26.1, "rougeL": 28.35}],
    },
    "Rerank-T5": {"WordNet": [{"bleu": 30.91, "rougeL": 30.99}], "Urban": [{"bleu": 17.77, "rougeL": 18.25}]},
}


def test_mean_std_is_sample_std():
    assert mean_std([36.4, 37.0, 37.6]) == pytest.approx((37.0, 0.6))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_table2_markdown_csv_latex():
    table = table2(RESULTS)
    assert table.header == [
        "Method",
        "WordNet BLEU",
        "WordNet ROUGE",
        "Urban BLEU",
        "Urban ROUGE",
        "Avg. BLEU",
        "Avg. ROUGE",
    ]
    assert table.rows[0][:2] == ["LM-Lexicon-Dense", "37.00±0.60"]
    assert table.rows[1] == ["Rerank-T5", "30.91", "30.99", "17.77", "18.25", "24.34", "24.62"]
    assert "| Rerank-T5 | 30.91 |" in table.markdown()
    assert table.csv().splitlines()[2] == "Rerank-T5,30.91,30.99,17.77,18.25,24.34,24.62"
    assert "37.00$\\pm$0.60" in table.latex() and "\\toprule" in table.latex()


def test_one_dataset_has_no_avg_columns():
    table = table2({"A": {"WordNet": [{"bleu": 10.0, "rougeL": 20.0}]}})
    assert table.header == ["Method", "WordNet BLEU", "WordNet ROUGE"]
    assert table.rows == [["A", "10.00", "20.00"]]
    assert "Avg." not in table.markdown() + table.csv() + table.latex()


def test_missing_cell_is_a_dash_and_left_out_of_avg():
    table = table2({"A": {"x": [{"bleu": 10.0, "rougeL": 20.0}]}, "B": {"y": [{"bleu": 30.0, "rougeL": 40.0}]}})
    assert table.rows[0] == ["A", "10.00", "20.00", "–", "–", "10.00", "20.00"]


def test_report_cli_from_scores_files(tmp_path, capsys):
    for name, ds, seeds in (("run1", "WordNet", [21, 42]), ("run2", "Urban", [21])):
        scores = {
            "dataset": ds,
            "systems": {
                "MoE": {
                    "seeds": [{"seed": s, "scores": {"bleu": 40.0 + i, "rougeL": 41.0}} for i, s in enumerate(seeds)]
                }
            },
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "scores.json").write_text(json.dumps(scores))
    out = tmp_path / "tables"
    assert main(["--runs", str(tmp_path / "run1"), str(tmp_path / "run2"), "--output-dir", str(out)]) == 0
    assert "| MoE | 40.50±0.71 | 41.00±0.00 | 40.00 | 41.00 | 40.25 | 41.00 |" in (out / "table2.md").read_text()
    assert (out / "table2.csv").is_file() and (out / "table2.tex").is_file()
    assert main(["--runs", str(tmp_path / "missing"), "--output-dir", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_significance_tests():
    rng = np.random.default_rng(0)
    a = rng.normal(50, 10, size=500)
    b = a - 3 + rng.normal(0, 1, size=500)
    boot = paired_bootstrap(a, b, samples=500, seed=1)
    assert boot["delta"] == pytest.approx(3, abs=0.2) and boot["p_value"] < 0.01
    assert boot["ci95"][0] < boot["delta"] < boot["ci95"][1]
    assert paired_ttest(a, b)["p_value"] < 1e-10
    same = paired_bootstrap(a, a + rng.normal(0, 1, size=500), samples=500, seed=1)
    assert same["p_value"] > 0.05
    assert paired_ttest(a, a) == {"t": 0.0, "p_value": 1.0}
    assert paired_bootstrap(a, b, samples=300, seed=7) == paired_bootstrap(a, b, samples=300, seed=7)


def test_report_sacrebleu_column_beside_the_papers_bleu(urban, tmp_path, capsys):
    """Real Urban rows, shortened predictions: the standard corpus BLEU column sits after the paper's
    Moses sentence BLEU+1, and is lower (no +1 floor on unigrams, no max over single references)."""
    import sacrebleu

    from evaluation.evaluate import main as evaluate_main

    records = urban[:60]
    refs, preds = tmp_path / "test.jsonl", tmp_path / "p.jsonl"
    refs.write_text("".join(r.to_json() + "\n" for r in records))
    hyps = [" ".join(r.definition.split()[:3]) for r in records]
    preds.write_text(
        "".join(json.dumps({"id": r.id, "prediction": h, "model": "prefix"}) + "\n" for r, h in zip(records, hyps))
    )
    run = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--predictions",
                str(preds),
                "--references",
                str(refs),
                "--metrics",
                "bleu,rouge,sacrebleu",
                "--output-dir",
                str(run),
            ]
        )
        == 0
    )
    scores = json.loads((run / "scores.json").read_text())
    out = tmp_path / "tables"
    assert main(["--runs", str(run), "--output-dir", str(out), "--report-sacrebleu"]) == 0
    md = (out / "table2.md").read_text()
    assert md.startswith("| Method | Urban BLEU | Urban sacreBLEU | Urban ROUGE |\n")  # one dataset: no Avg.
    assert f"| prefix | {scores['bleu']:.2f} | {scores['sacrebleu']:.2f} | {scores['rougeL']:.2f} |" in md
    from evaluation.protocols import PROTOCOLS, reference_lists

    lists = reference_lists(records, records, PROTOCOLS["max"])  # each record's own definition first
    streams = [[rs[k] if k < len(rs) else None for rs in lists] for k in range(max(map(len, lists)))]
    assert scores["sacrebleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert scores["sacrebleu"] < scores["bleu"]
    capsys.readouterr()
    bare = tmp_path / "bare"
    assert evaluate_main(["--predictions", str(preds), "--references", str(refs), "--output-dir", str(bare)]) == 0
    assert main(["--runs", str(bare), "--output-dir", str(out), "--report-sacrebleu"]) == 2
    assert "report_sacrebleu: no sacrebleu score for prefix on Urban" in capsys.readouterr().err


def test_report_ci_prints_half_the_bootstrap_interval(urban, tmp_path, capsys):
    """Real Urban rows, three seeds in one file: --report-ci prints mean ± half the CI width of scores.json."""
    from evaluation.evaluate import main as evaluate_main

    records = urban[:50]
    refs, preds = tmp_path / "test.jsonl", tmp_path / "p.jsonl"
    refs.write_text("".join(r.to_json() + "\n" for r in records))
    rows = [
        {"id": r.id, "prediction": " ".join(r.definition.split()[: 2 + (i + seed) % 5]), "model": "M", "seed": seed}
        for seed in (21, 42, 84)
        for i, r in enumerate(records)
    ]
    preds.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = tmp_path / "eval"
    assert evaluate_main(["--predictions", str(preds), "--references", str(refs), "--output-dir", str(run)]) == 0
    scores = json.loads((run / "scores.json").read_text())
    (low, high), (rlow, rhigh) = (scores["ci95"]["systems"]["M"][m] for m in ("bleu", "rougeL"))
    out = tmp_path / "tables"
    assert main(["--runs", str(run), "--output-dir", str(out), "--report-ci"]) == 0
    cell = f"| M | {scores['bleu']:.2f}±{(high - low) / 2:.2f} | {scores['rougeL']:.2f}±{(rhigh - rlow) / 2:.2f} |"
    assert cell in (out / "table2.md").read_text()
    assert main(["--runs", str(run), "--output-dir", str(out)]) == 0  # without: ± std over the seeds
    assert f"| M | {scores['bleu']:.2f}±{scores['std']['bleu']:.2f} |" in (out / "table2.md").read_text()
    old = tmp_path / "old" / "scores.json"
    old.parent.mkdir()
    old.write_text(json.dumps({k: v for k, v in scores.items() if k != "ci95"}))
    capsys.readouterr()
    assert main(["--runs", str(old), "--output-dir", str(out), "--report-ci"]) == 1
    assert "old/scores.json: ci95: missing (written by an older evaluate: rerun it)" in capsys.readouterr().err
    assert main(["--runs", str(run), str(run), "--output-dir", str(out), "--report-ci"]) == 1
    assert "M on Urban is in another run too" in capsys.readouterr().err
