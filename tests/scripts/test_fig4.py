"""scripts/fig4.py on the tiny paper setting: samples drawn once, oracle curve non-decreasing, PNG, rerun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from run_config.loader import load_config
from scripts.experiment import TOY_CONFIG, ExperimentConfig, table_settings
from scripts.fig4 import Fig4Settings, main, oracle_curve, read_samples, sample_counts


def _config(tiny_paper, tmp_path, fig4):
    cfg = json.loads(tiny_paper.read_text())
    cfg["tables"] = {"fig4": fig4}
    path = tmp_path / "fig4.json"
    path.write_text(json.dumps(cfg))
    return path, Path(cfg["work_dir"])


def test_sample_counts_double_up_to_the_maximum():
    assert sample_counts(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert sample_counts(6) == [1, 2, 4, 6] and sample_counts(1) == [1]


def test_inputs_whose_samples_all_failed_count_as_zero(wordnet_lexicon, tmp_path):
    """Real WordNet test rows, 4 samples each: the gold definition, a wrong one, failures. An input whose
    samples all failed stays in the mean with BLEU 0 (it used to be dropped: a survivors-only mean)."""
    from dataset.predictions import make_row, write_rows
    from dataset.records import load_records

    test_file = wordnet_lexicon / "test.jsonl"
    records = load_records(test_file)[:6]
    rows = []
    for k, r in enumerate(records):
        for idx in range(4):
            failed = k < 2 or (idx == 0 and k < 4)  # inputs 0, 1: every sample failed; 2, 3: the first one
            text = None if failed else (r.definition if idx == 3 else "zzz qqq")
            rows.append(
                make_row(
                    r.id,
                    r.term,
                    r.context,
                    prediction=text,
                    model="m",
                    seed=42,
                    sample_idx=idx,
                    latency_s=0.0,
                    error="HTTP 500" if failed else None,
                )
            )
    write_rows(tmp_path / "samples.jsonl", rows)
    samples, counts = read_samples(tmp_path / "samples.jsonl", 4)
    assert counts == {"inputs": 6, "failed_samples": 2 * 4 + 2, "failed_inputs": 2}
    assert samples[records[0].id] == [""] * 4 and len(samples[records[2].id]) == 4
    curve = oracle_curve(samples, test_file, [1, 2, 4], "max")
    assert curve[-1] == pytest.approx(100.0 * 4 / 6)  # the gold sample of 4 inputs of 6, not of the 4 survivors
    assert curve[0] < curve[1] < curve[2]


def test_toy_config_shrinks_the_sweep():
    settings = table_settings(load_config(TOY_CONFIG, ExperimentConfig), "fig4", Fig4Settings, str(TOY_CONFIG))
    assert (settings.max_samples, settings.items, settings.systems) == (16, 32, ["dense", "moe"])
    assert (Fig4Settings().max_samples, Fig4Settings().items) == (128, 64)


@pytest.mark.slow
def test_fig4_curves_png_and_rerun(tiny_paper, tmp_path, capsys):
    path, work = _config(tiny_paper, tmp_path, {"max_samples": 4, "items": 3})
    assert main(["--config", str(path)]) == 0
    out = capsys.readouterr().out
    tables = work / "tables"
    result = json.loads((tables / "fig4.json").read_text())
    assert result["counts"] == [1, 2, 4]
    assert set(result["curves"]) == {"LM-Lexicon-Dense / WordNet", "LM-Lexicon-MoE / WordNet"}
    for values in result["curves"].values():
        assert len(values) == 3 and all(0 < v <= 100 for v in values)
        assert values == sorted(values)  # best of a longer prefix is never worse
    assert all(result["monotone"].values())
    for system in ("dense", "moe"):
        rows = [
            json.loads(line)
            for line in (work / "infer" / f"{system}_bon4" / "WordNet" / "seed42" / "samples.jsonl")
            .read_text()
            .splitlines()
        ]
        assert len(rows) == 3 * 4 and {r["sample_idx"] for r in rows} == {0, 1, 2, 3}
    png = tables / "fig4.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    md = (tables / "fig4.md").read_text()
    assert md.startswith("| N | LM-Lexicon-Dense / WordNet | LM-Lexicon-MoE / WordNet |")
    assert "| monotone | yes | yes |" in md
    for name, curve in result["curves"].items():  # one line per deployable selector, on the same samples
        picks = result["selectors"][name]
        assert list(picks) == ["first", "likelihood", "orm", "mbr"]
        for selector, label in (("first", "first"), ("likelihood", "likelihood"), ("orm", "ORM"), ("mbr", "MBR")):
            bleu, share = picks[selector]["bleu"], picks[selector]["oracle_gain_share"]
            assert 0 <= bleu <= curve[-1] + 1e-9  # no selector beats the oracle of the same samples
            gain = curve[-1] - curve[0]
            assert share == (pytest.approx((bleu - curve[0]) / gain) if gain > 0 else None)
            assert f"| {label} at N=4 (share of oracle gain) |" in md
            assert f"{name}: {label} BLEU {bleu:.2f} at N=4, " in out
    assert "consistent BLEU gains up to 128 samples on all five benchmarks" in out and "monotone on 2 of 2" in out
    samples = sorted(work.rglob("samples.jsonl")) + sorted(work.rglob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in samples}
    assert main(["--config", str(path)]) == 0
    assert {p: p.stat().st_mtime_ns for p in samples} == stamps
    again = json.loads((tables / "fig4.json").read_text())
    assert again["curves"] == result["curves"] and again["selectors"] == result["selectors"]


def test_selector_share_of_the_oracle_gain():
    from scripts.fig4 import gain_share

    assert gain_share(30.0, [20.0, 25.0, 40.0]) == pytest.approx(0.5)
    assert gain_share(20.0, [20.0, 40.0]) == 0.0 and gain_share(10.0, [20.0, 20.0]) is None


def test_fig4_settings_errors_name_file_and_key(tiny_paper, tmp_path, capsys):
    path, _ = _config(tiny_paper, tmp_path, {"max_sample": 4})
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: tables.fig4.max_sample: unknown key" in err
    path, _ = _config(tiny_paper, tmp_path, {"datasets": ["Oxford"]})
    assert main(["--config", str(path)]) == 2
    assert "tables.fig4.datasets: 'Oxford' is not a reported dataset" in capsys.readouterr().err
