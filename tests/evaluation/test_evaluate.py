"""The evaluate CLI end to end on real Urban rows: outputs, seeds, Best-of-N, significance, error cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main as toolkit
from evaluation.evaluate import main

N = 40


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def refs(urban, tmp_path) -> Path:
    """A small evaluation split: the first N Urban records (several terms have several definitions)."""
    return write_jsonl(tmp_path / "test.jsonl", [json.loads(r.to_json()) for r in urban[:N]])


def gold(urban, **extra) -> list[dict]:
    return [{"id": r.id, "prediction": r.definition, **extra} for r in urban[:N]]


def run(*args) -> int:
    return main([str(a) for a in args])


def test_minimal_command_line_writes_scores_table_and_examples(urban, refs, tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", gold(urban))
    out = tmp_path / "out"
    assert (
        toolkit.main(
            [
                "evaluate",
                "--predictions",
                str(preds),
                "--references",
                str(refs),
                "--protocol",
                "max",
                "--metrics",
                "bleu,rouge",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    scores = json.loads((out / "scores.json").read_text())
    assert scores["bleu"] == pytest.approx(100.0) and scores["rougeL"] == pytest.approx(100.0)
    assert scores["dataset"] == "Urban" and scores["protocol"] == "max"
    assert scores["counts"]["runs"][0]["missing_ids"] == 0
    rows = [json.loads(l) for l in (out / "per_example.jsonl").open()]
    assert len(rows) == N and set(rows[0]) >= {"id", "prediction", "bleu", "rougeL", "empty"}
    assert "| Method | Urban BLEU | Urban ROUGE |" in (out / "table.md").read_text()
    assert (out / "table.csv").read_text().startswith("Method,Urban BLEU,Urban ROUGE")
    assert "\\begin{tabular}" in (out / "table.tex").read_text()
    assert json.loads((out / "manifest.json").read_text())["stage"] == "evaluate"
    capsys.readouterr()
    assert run("--predictions", preds, "--references", refs, "--metrics", "bleu,rouge", "--output-dir", out) == 0
    assert "up to date" in capsys.readouterr().out


def test_seeds_best_of_n_missing_and_empty(urban, refs, tmp_path):
    rows = []
    for seed in (21, 42, 84):
        for i, r in enumerate(urban[: N - 5]):  # 5 ids never predicted
            rows.append(
                {
                    "id": r.id,
                    "prediction": r.definition if (i + seed) % 4 else "",
                    "model": "m",
                    "seed": seed,
                    "sample_idx": 0,
                }
            )
            rows.append(
                {"id": r.id, "prediction": "some other words entirely", "model": "m", "seed": seed, "sample_idx": 1}
            )
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    assert run("--predictions", preds, "--references", refs, "--metrics", "bleu", "rouge", "--output-dir", out) == 0
    scores = json.loads((out / "scores.json").read_text())
    seeds = scores["systems"]["m"]["seeds"]
    assert [s["seed"] for s in seeds] == [21, 42, 84]
    assert all(s["n_examples"] == N - 5 and s["n_samples"] == 2 * (N - 5) for s in seeds)
    assert scores["counts"]["empty_predictions"] == sum(not r["prediction"] for r in rows) > 0
    assert all(r["missing_ids"] == 5 for r in scores["counts"]["runs"])
    assert scores["std"]["bleu"] > 0
    assert scores["bleu"] == pytest.approx(sum(s["scores"]["bleu"] for s in seeds) / 3)
    assert scores["oracle"]["bleu"] > scores["bleu"]
    assert "±" in (out / "table.md").read_text()
    assert run("--predictions", preds, "--references", refs, "--output-dir", tmp_path / "o2", "--require-all") == 1


def test_compare_to_gives_p_values(urban, refs, tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", gold(urban))
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"id": r.id, "prediction": urban[-1 - i].definition} for i, r in enumerate(urban[:N])]
    )
    out = tmp_path / "out"
    assert (
        run(
            "--predictions",
            good,
            "--references",
            refs,
            "--compare-to",
            bad,
            "--output-dir",
            out,
            "--bootstrap-samples",
            200,
        )
        == 0
    )
    sig = json.loads((out / "significance.json").read_text())["metrics"]
    assert sig["bleu"]["bootstrap"]["p_value"] < 0.05 and sig["bleu"]["ttest"]["p_value"] < 0.05
    assert sig["bleu"]["bootstrap"]["delta"] > 0
    assert "bootstrap p=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"id": "nope", "prediction": "x"}], "p.jsonl:1: id: 1 prediction id(s) not in"),
        (
            [{"id": "Urban_test:1:0", "prediction": "x"}, {"id": "Urban_test:1:0", "prediction": "y"}],
            "p.jsonl:2: id: duplicate prediction for id 'Urban_test:1:0'",
        ),
        ([{"id": "Urban_test:1:0"}], "p.jsonl:1: prediction: missing"),
        ([{"id": "Urban_test:1:0", "prediction": 3}], "p.jsonl:1: prediction: expected str"),
        ([{"id": "Urban_test:1:0", "prediction": "x", "seed": "21"}], "p.jsonl:1: seed: expected int"),
        (
            [{"id": "Urban_test:1:0", "prediction": "x", "error": "HTTP 500"}],
            "p.jsonl:1: error: set beside a prediction",
        ),
    ],
)
def test_bad_predictions_fail_with_file_line_field(rows, message, refs, tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    assert run("--predictions", preds, "--references", refs, "--output-dir", tmp_path / "out") == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "scores.json").exists()


def test_invalid_json_and_missing_files(refs, tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "Urban_test:1:0", "prediction": "x"}\n{oops\n')
    assert run("--predictions", preds, "--references", refs, "--output-dir", tmp_path / "out") == 1
    assert "p.jsonl:2: invalid JSON" in capsys.readouterr().err
    preds.write_text('{"id": "Urban_test:1:0", "prediction": "x"}\n{"id": "Urban_test:1:1", "predi')  # cut off
    assert run("--predictions", preds, "--references", refs, "--output-dir", tmp_path / "out") == 1
    assert "p.jsonl:2: invalid JSON" in capsys.readouterr().err  # scored files are whole: no torn tail dropped
    assert run("--predictions", tmp_path / "none.jsonl", "--references", refs, "--output-dir", tmp_path / "o") == 1
    assert "none.jsonl: no such file" in capsys.readouterr().err


def test_unknown_metric_or_protocol_is_a_usage_error(refs, tmp_path, capsys):
    assert run("--predictions", refs, "--references", refs, "--metrics", "blue", "--output-dir", tmp_path) == 2
    assert "unknown metric 'blue' (did you mean bleu?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("--predictions", refs, "--references", refs, "--protocol", "mean", "--output-dir", tmp_path)


def test_failed_generations_from_infer_score_zero_and_are_counted(urban, refs, tmp_path):
    rows = gold(urban)
    rows[0] = {"id": rows[0]["id"], "prediction": None, "error": "HTTP 500 after 4 attempts"}
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    assert run("--predictions", preds, "--references", refs, "--metrics", "bleu", "--output-dir", out) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["counts"]["failed_predictions"] == 1
    assert scores["bleu"] == pytest.approx(100.0 * (N - 1) / N)
    rows[0] = {"id": rows[0]["id"], "prediction": None}
    write_jsonl(preds, rows)
    assert run("--predictions", preds, "--references", refs, "--output-dir", tmp_path / "o2") == 1


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "run_config").glob("evaluate*.json"))


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_empty_and_failed_predictions_score_under_every_shipped_config(
    config, urban, refs, tmp_path, minilm_dir, smollm2_dir
):
    """Every metric of every shipped config, the paper-era models swapped for local ones (MAUVE on SmolLM2's
    GPT-2-style tokens, `last` pooling as gpt2-large): empty, blank and failed rows score 0 and are counted."""
    rows = gold(urban)[:24]
    rows[0]["prediction"] = ""
    rows[1] = {"id": rows[1]["id"], "prediction": None, "error": "HTTP 500 after 4 attempts"}
    rows[2]["prediction"] = "  "
    rows[3]["prediction"] = "."  # empty once orig-compat removes periods
    preds = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "out"
    local = [
        "--bertscore-model",
        minilm_dir,
        "--bertscore-num-layers",
        6,
        "--moverscore-model",
        minilm_dir,
        "--mauve-model",
        smollm2_dir,
        "--mauve-num-buckets",
        2,
        "--device",
        "cpu",
        "--batch-size",
        16,
    ]
    assert run("--config", config, "--predictions", preds, "--references", refs, "--output-dir", out, *local) == 0
    scores = json.loads((out / "scores.json").read_text())
    compat = scores["protocol"] == "orig-compat"
    assert scores["counts"]["empty_predictions"] == 3 and scores["counts"]["failed_predictions"] == 1
    (seed,) = scores["systems"][next(iter(scores["systems"]))]["seeds"]
    assert seed["n_examples"] == 24 and seed["n_empty"] == 3 + compat
    per_example = [json.loads(line) for line in (out / "per_example.jsonl").open()]
    metrics = [m for m in seed["scores"] if m not in ("sacrebleu", "mauve")]
    for row in per_example[: 3 + compat]:
        assert row["empty"] and all(row[m] == 0.0 for m in metrics), row
    assert all(not row["empty"] for row in per_example[3 + compat :])
    if "mauve" in seed["scores"]:
        assert seed["excluded"] == {"mauve_excluded_predictions": 3, "mauve_excluded_references": 0}
        assert 0 < seed["scores"]["mauve"] <= 100 and "bertscore" in metrics and "moverscore" in metrics


def test_rescaling_without_a_baseline_is_refused_before_any_work(refs, tmp_path, minilm_dir, capsys):
    out = tmp_path / "out"
    args = [
        "--predictions",
        refs,
        "--references",
        refs,
        "--metrics",
        "bleu,bertscore",
        "--output-dir",
        out,
        "--bertscore-model",
        minilm_dir,
        "--bertscore-num-layers",
        6,
        "--bertscore-rescale",
    ]
    assert run(*args) == 2
    assert "bertscore_baseline_file: value error, needed with bertscore_rescale" in capsys.readouterr().err
    assert not out.exists()
    assert run(*args, "--bertscore-baseline-file", tmp_path / "missing.tsv") == 2
    assert "missing.tsv: no such file" in capsys.readouterr().err


def test_scores_carry_signatures_and_seeded_bootstrap_cis(urban, refs, tmp_path):
    records = urban[:N]
    half = [
        {"id": r.id, "prediction": r.definition if i % 2 else "zzz", "model": "half"} for i, r in enumerate(records)
    ]
    preds = write_jsonl(tmp_path / "p.jsonl", half)
    args = ["--predictions", preds, "--references", refs, "--metrics", "bleu,rouge,sacrebleu"]
    args += ["--bootstrap-samples", 300]
    assert run(*args, "--output-dir", tmp_path / "a") == 0
    scores = json.loads((tmp_path / "a" / "scores.json").read_text())
    assert set(scores["signatures"]) == {"bleu", "rougeL", "sacrebleu"}
    assert scores["signatures"]["bleu"].startswith("bleu|protocol:max|refs:term|combine:max|case:mixed|order:4|")
    assert "|tokenize:none|smooth:moses|lm-lexicon:" in scores["signatures"]["bleu"]
    assert "|rouge_score:" in scores["signatures"]["rougeL"] and "|sacrebleu:" in scores["signatures"]["sacrebleu"]
    ci = scores["ci95"]
    assert ci["bootstrap_samples"] == 300 and ci["seed"] == 42
    low, high = ci["systems"]["half"]["bleu"]
    assert low < scores["bleu"] < high and high - low > 10  # half the rows are perfect, half nearly 0
    s_low, s_high = ci["systems"]["half"]["sacrebleu"]  # a corpus metric: from sufficient statistics
    assert s_low < scores["sacrebleu"] < s_high
    assert run(*args, "--output-dir", tmp_path / "b", "--seed", 7) == 0
    other = json.loads((tmp_path / "b" / "scores.json").read_text())["ci95"]["systems"]["half"]["bleu"]
    assert other != [low, high]
    assert run(*args, "--output-dir", tmp_path / "c") == 0
    assert json.loads((tmp_path / "c" / "scores.json").read_text())["ci95"] == ci  # seeded: identical
    assert run(*args, "--output-dir", tmp_path / "d", "--protocol", "orig-compat") == 0
    orig = json.loads((tmp_path / "d" / "scores.json").read_text())
    assert "|protocol:orig-compat|refs:term|combine:best|periods:stripped|round:up|" in orig["signatures"]["bleu"]
    assert "|tokenizer:word|stemmer:false|" in orig["signatures"]["rougeL"]


def test_many_systems_against_one_baseline_with_holm(urban, refs, tmp_path, capsys):
    """Three prediction files against one baseline: each tested, p-values Holm-corrected over the three."""
    records = urban[:N]
    base = write_jsonl(tmp_path / "base.jsonl", [{"id": r.id, "prediction": "a word"} for r in records])
    files = []
    for name, good in (("strong", N), ("weak", N // 4), ("tie", 0)):
        rows = [{"id": r.id, "prediction": r.definition if i < good else "a word"} for i, r in enumerate(records)]
        files.append(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    out = tmp_path / "out"
    assert run("--predictions", *files, "--references", refs, "--compare-to", base, "--output-dir", out) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["systems"]) == ["strong", "weak", "tie"] and scores["counts"]["files"] == 3
    assert set(scores["ci95"]["systems"]) == {"strong", "weak", "tie"}
    sig = json.loads((out / "significance.json").read_text())
    assert sig["holm_family"] == 3 and "metrics" not in sig
    comp = {Path(p).stem: c["metrics"]["bleu"] for p, c in sig["comparisons"].items()}
    assert comp["strong"]["randomization"]["p_value"] < 0.01 and comp["strong"]["bootstrap"]["delta"] > 50
    assert comp["tie"]["randomization"]["p_value"] == 1.0 and comp["tie"]["bootstrap"]["delta"] == 0.0
    from evaluation.significance import holm

    for test in ("bootstrap", "randomization", "ttest"):
        raw = [comp[n][test]["p_value"] for n in ("strong", "weak", "tie")]
        assert [comp[n][test]["p_holm"] for n in ("strong", "weak", "tie")] == pytest.approx(holm(raw))
    printed = capsys.readouterr().out
    assert "weak.jsonl bleu: delta" in printed and "randomization p=" in printed and "(Holm " in printed


def test_a_system_in_two_prediction_files_is_refused(urban, refs, tmp_path, capsys):
    rows = [{"id": r.id, "prediction": r.definition, "model": "m"} for r in urban[:N]]
    a, b = write_jsonl(tmp_path / "a.jsonl", rows), write_jsonl(tmp_path / "b.jsonl", rows)
    assert run("--predictions", a, b, "--references", refs, "--output-dir", tmp_path / "out") == 1
    assert "b.jsonl: model: system 'm' is also in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
