"""infer on routed pico MoEs and real WordNet rows: every row names its expert and the router's margin, summary
counts hybrid's mixed inputs, and evaluate --group-by expert scores each expert's rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import inference.infer as infer
from dataset.predictions import read_rows
from dataset.records import load_records
from evaluation.evaluate import main as evaluate
from tests.helpers.pico import perturbed_copy, pico_llama, write_minilm_clusters
from training.moe.config import MergeConfig
from training.moe.merge import merge
from training.moe.routing import load_routed_moe


@pytest.fixture(scope="module")
def moes(tmp_path_factory, wordnet_rows, minilm_dir) -> dict[str, Path]:
    """3 distinct pico experts: merged with MiniLM centroids of the rows (domain, hybrid) and without (token)."""
    root = tmp_path_factory.mktemp("routed")
    base = pico_llama(root / "base", seed=0)
    experts = [str(perturbed_copy(base, root / f"e{i}", seed=i, scale=0.3)) for i in range(3)]
    pairs = [(r.term, r.context) for r in load_records(wordnet_rows)]
    write_minilm_clusters(root / "clusters", pairs, 3, minilm_dir)
    clusters = str(root / "clusters")
    merge(MergeConfig(experts=experts, output_dir=str(root / "domain"), cluster_dir=clusters))
    margins = [r.margin for r in load_routed_moe(root / "domain").routes(pairs)]
    tau = float(np.median(margins))
    hybrid = MergeConfig(
        experts=experts, output_dir=str(root / "hybrid"), cluster_dir=clusters, policy="hybrid", hybrid_tau=tau
    )
    merge(hybrid)
    merge(MergeConfig(experts=experts, output_dir=str(root / "token"), policy="token", top_k=2))
    folders = {name: root / name for name in ("domain", "hybrid", "token")}
    return {**folders, "base": base, "margins": margins, "tau": tau}


def _infer(model: Path, rows: Path, out: Path, *extra: str) -> int:
    args = ["--model", model, "--input", rows, "--output-dir", out, "--greedy", "--max-new-tokens", "6", *extra]
    return infer.main([*map(str, args), "--device", "cpu", "--batch-size", "8"])


def test_every_routed_row_names_its_expert_and_margin(moes, wordnet_rows, tmp_path):
    assert _infer(moes["domain"], wordnet_rows, tmp_path / "domain") == 0
    rows, _ = read_rows(tmp_path / "domain" / "predictions.jsonl")
    assert len(rows) == 24 and all(isinstance(r["expert"], int) for r in rows)
    assert [r["router_margin"] for r in rows] == pytest.approx(moes["margins"], abs=1e-5)
    summary = json.loads((tmp_path / "domain" / "summary.json").read_text())
    assert summary["routing"]["mixed_share"] == 0 and summary["routing"]["mean_experts"] == 1

    assert _infer(moes["hybrid"], wordnet_rows, tmp_path / "hybrid") == 0
    rows, _ = read_rows(tmp_path / "hybrid" / "predictions.jsonl")
    mixed = [m < moes["tau"] for m in moes["margins"]]
    assert [isinstance(r["expert"], list) for r in rows] == mixed
    routing = json.loads((tmp_path / "hybrid" / "summary.json").read_text())["routing"]
    assert routing["mixed_share"] == pytest.approx(sum(mixed) / 24) and 0 < routing["mixed_share"] < 1
    assert routing["mean_experts"] == pytest.approx(1 + sum(mixed) / 24)

    assert _infer(moes["token"], wordnet_rows, tmp_path / "token") == 0
    rows, _ = read_rows(tmp_path / "token" / "predictions.jsonl")
    assert all(len(r["expert"]) == 2 and r["expert"][0][1] == r["router_margin"] for r in rows)
    assert all(r["expert"][0][1] >= r["expert"][1][1] for r in rows)

    hybrid, _ = read_rows(tmp_path / "hybrid" / "predictions.jsonl")
    out, preds = tmp_path / "scores", tmp_path / "hybrid" / "predictions.jsonl"
    args = ["--predictions", preds, "--references", wordnet_rows, "--output-dir", out, "--group-by", "expert"]
    assert evaluate([*map(str, args)]) == 0
    groups = json.loads((out / "scores.json").read_text())["groups"]["expert"]
    tops = [str(r["expert"] if isinstance(r["expert"], int) else r["expert"][0][0]) for r in hybrid]
    assert {label: g["predictions"] for label, g in groups.items()} == {e: tops.count(e) for e in sorted(set(tops))}


def test_oracle_routing_runs_every_expert_and_reports_the_regret(moes, wordnet_rows, tmp_path):
    from evaluation.api import score_records

    out = tmp_path / "oracle"
    assert _infer(moes["domain"], wordnet_rows, out, "--routing", "oracle") == 0
    records = load_records(wordnet_rows)
    files = [read_rows(out / "experts" / f"expert_{e}.jsonl")[0] for e in range(3)]
    assert all(len(rows) == 24 and {r["expert"] for r in rows} == {e} for e, rows in enumerate(files))
    per_expert = [{r["id"]: r for r in rows} for rows in files]
    routed, _ = read_rows(out / "predictions.jsonl")
    assert [r["id"] for r in routed] == [r.id for r in records]
    # the routed (domain) row is its chosen expert's row: the same text, batch-independent
    assert all(r["prediction"] == per_expert[r["expert"]][r["id"]]["prediction"] for r in routed)
    report = json.loads((out / "oracle_report.json").read_text())
    texts = [[rows[r.id]["prediction"] or "" for rows in per_expert] for r in records]
    bleu = score_records(texts, records, ("bleu",), "max").per_sample["bleu"].reshape(24, 3)
    assert report["oracle"]["bleu"] == pytest.approx(bleu.max(axis=1).mean())
    routed_bleu = bleu[np.arange(24), [r["expert"] for r in routed]]
    assert report["routed"]["bleu"] == pytest.approx(routed_bleu.mean())
    assert report["regret"]["bleu"] == pytest.approx(bleu.max(axis=1).mean() - routed_bleu.mean())
    assert report["regret"]["bleu"] >= 0
    assert report["non_best_share"] == pytest.approx(np.mean(routed_bleu < bleu.max(axis=1)))
    assert sum(c["inputs"] for c in report["per_cluster"].values()) == 24
    assert np.array(report["expert_cluster"], dtype=float).shape == (3, 3)
    oracle_rows, _ = read_rows(out / "oracle_predictions.jsonl")
    assert [bleu[k, r["expert"]] for k, r in enumerate(oracle_rows)] == pytest.approx(list(bleu.max(axis=1)))
    assert (out / "expert_cluster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 24 | all |" in (out / "oracle_report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["oracle"]["regret"] == report["regret"]


def test_oracle_of_a_hybrid_moe_plots_the_tau_curve(moes, wordnet_rows, tmp_path):
    out = tmp_path / "hybrid"
    assert _infer(moes["hybrid"], wordnet_rows, out, "--routing", "oracle") == 0
    curve = json.loads((out / "oracle_report.json").read_text())["hybrid_curve"]
    assert curve[0]["tau"] == 0.0 and curve[0]["mean_experts"] == 1.0 and curve[-1]["tau"] <= moes["tau"]
    assert [p["mean_experts"] for p in curve] == sorted(p["mean_experts"] for p in curve)
    routed = json.loads((out / "oracle_report.json").read_text())["routed"]["bleu"]
    at_tau = [p for p in curve if p["tau"] == pytest.approx(moes["tau"])]
    assert at_tau and at_tau[0]["score"] == pytest.approx(routed)  # tau of the run: the routed output itself
    assert (out / "hybrid_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_oracle_routing_is_refused_before_any_work(moes, wordnet_rows, tmp_path, capsys):
    assert _infer(moes["token"], wordnet_rows, tmp_path / "t", "--routing", "oracle") != 0
    assert "without --cluster-dir" in capsys.readouterr().err and not (tmp_path / "t" / "samples.jsonl").exists()
    assert _infer(moes["base"], wordnet_rows, tmp_path / "b", "--routing", "oracle") != 0
    assert "not a merged MoE folder" in capsys.readouterr().err


def test_beams_and_block_term_on_a_domain_moe_are_hf_beam_search_on_the_routed_expert(
    moes, wordnet_rows, tmp_path, capsys
):
    """--num-beams 2 --block-term on a domain-routed MoE: each row is HF's beam search with the term's tokens
    blocked on its routed expert alone, one input at a time. Policies that mix experts (hybrid) or route per
    token inside the model are refused before any sample."""
    import torch

    from inference.decoding import BlockSequences, term_token_sequences
    from inference.tasks import build_items, item_prompt

    flags = ("--num-beams", "2", "--length-penalty", "0.5", "--block-term")
    assert _infer(moes["domain"], wordnet_rows, tmp_path / "domain", *flags) == 0
    rows, _ = read_rows(tmp_path / "domain" / "predictions.jsonl")
    records = load_records(wordnet_rows)
    items = {i.id: i for i in build_items("word_interpretation", records, range(1, len(records) + 1), 42)}
    moe = load_routed_moe(moes["domain"], device="cpu")
    tok = moe.tokenizer
    assert len(rows) == 24 and len({r["expert"] for r in rows}) > 1
    for row in rows:
        ids = tok(item_prompt("word_interpretation", items[row["id"]], tok.bos_token), add_special_tokens=False)
        banned = term_token_sequences(tok, row["term"])
        with moe.only_expert(row["expert"]), torch.inference_mode():
            out = moe.model.generate(
                torch.tensor([ids["input_ids"]]),
                do_sample=False,
                num_beams=2,
                length_penalty=0.5,
                repetition_penalty=1.05,
                max_new_tokens=6,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                logits_processor=[BlockSequences([banned, banned])],
            )
        new = out[0, len(ids["input_ids"]) :].tolist()
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        assert row["raw"] == tok.decode(new, skip_special_tokens=True)
    for policy, message in (("hybrid", "mix several experts"), ("token", "routes inside the model")):
        assert _infer(moes[policy], wordnet_rows, tmp_path / policy, *flags) == 2
        assert message in capsys.readouterr().err
        assert (
            not (tmp_path / policy / "samples.jsonl").exists() or not read_rows(tmp_path / policy / "samples.jsonl")[0]
        )
