"""bench_dskd end to end on SmolLM2 shrunk to seconds: every objective under every seed, the paired tests, γ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scripts.bench_dskd import main, paired_tests


def test_ablation_scores_every_objective_and_seed(smollm2_dir: Path, wordnet_lexicon: Path, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    argv = ["--teacher", str(smollm2_dir), "--train", str(wordnet_lexicon / "train.jsonl")]
    argv += ["--valid", str(wordnet_lexicon / "valid.jsonl"), "--output-dir", str(out), "--device", "cpu"]
    argv += ["--steps", "2", "--batch-size", "4", "--train-samples", "24", "--valid-samples", "4"]
    argv += ["--sense-max-texts", "48", "--student-layers", "2", "--trainable-layers", "1"]
    argv += ["--max-new-tokens", "4", "--seeds", "1", "2", "--permutations", "99"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads((out / "results.json").read_text())
    assert (
        lines[-1]
        == f"ratio={results['summary']['dskd']['perplexity'][0] / results['summary']['ce']['perplexity'][0]:.4f} goal=1"
    )
    assert sorted((r["seed"], r["objective"]) for r in results["runs"]) == sorted(
        (s, o) for s in (1, 2) for o in ("ce", "kd", "dskd")
    )
    for r in results["runs"]:
        assert len(r["example_nll"]) == len(r["example_bleu"]) == 4 and r["perplexity"] > 1
        assert (r["push_active"] is not None) == (r["objective"] == "dskd")
    assert results["margin"]["source"].startswith("calibrated") and results["margin"]["gamma"] > 0
    assert 0 <= results["runs"][2]["push_active"] <= 1
    assert {(t["a"], t["b"], t["metric"]) for t in results["tests"]} == {
        (a, b, m) for a, b in (("dskd", "ce"), ("dskd", "kd"), ("kd", "ce")) for m in ("nll", "bleu")
    }
    ppl, std = results["summary"]["ce"]["perplexity"]
    runs = [r["perplexity"] for r in results["runs"] if r["objective"] == "ce"]
    assert ppl == pytest.approx(np.mean(runs)) and std == pytest.approx(np.std(runs, ddof=1))


def test_paired_tests_find_a_real_difference_and_correct_for_many() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(3.0, 0.5, 200)
    per_example = {
        "ce": {"nll": base, "bleu": rng.normal(10, 3, 200)},
        "kd": {"nll": base - 0.3 + rng.normal(0, 0.05, 200), "bleu": rng.normal(10, 3, 200)},
        "dskd": {"nll": base.copy(), "bleu": rng.normal(10, 3, 200)},
    }
    tests = {(t["a"], t["b"], t["metric"]): t for t in paired_tests(per_example, 999)}
    assert len(tests) == 6 and all(t["p_holm"] >= t["p_value"] for t in tests.values())
    assert tests[("kd", "ce", "nll")]["delta"] == pytest.approx(-0.3, abs=0.02)
    assert tests[("kd", "ce", "nll")]["p_holm"] < 0.01
    assert tests[("dskd", "ce", "nll")]["delta"] == 0 and tests[("dskd", "ce", "nll")]["p_value"] == 1
