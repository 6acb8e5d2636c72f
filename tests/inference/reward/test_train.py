"""train-reward: Bradley-Terry ORM on SmolLM2-135M with negatives it sampled itself, on real WordNet rows."""

from __future__ import annotations

import json

import pytest
import torch

from dataset.records import load_records
from inference.backend import Sampling
from inference.best_of_n import select_sample
from inference.local import LocalBackend
from inference.reward.model import RewardScorer, bradley_terry_loss, mine_negatives
from inference.reward.train import main

torch.set_num_threads(1)  # shared 2-core machine: concurrent OpenMP pools thrash


def test_bradley_terry_loss_values():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = (-torch.nn.functional.logsigmoid(torch.tensor(2.0)) + torch.log(torch.tensor(2.0))) / 2
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def trained(wordnet_lexicon, smollm2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("orm")
    argv = [
        "--train",
        str(wordnet_lexicon / "train.jsonl"),
        "--valid",
        str(wordnet_lexicon / "valid.jsonl"),
        "--output-dir",
        str(out),
        "--policy-model",
        str(smollm2_dir),
        "--device",
        "cpu",
        "--max-train-prompts",
        "12",
        "--max-valid-prompts",
        "8",
        "--samples-per-prompt",
        "4",
        "--negatives-per-prompt",
        "2",
        "--max-new-tokens",
        "12",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--learning-rate",
        "1e-4",
        "--trainable-top-layers",
        "2",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    return out, argv


@pytest.mark.slow
def test_orm_loss_falls_and_beats_chance_on_held_out_pairs(trained):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_pairs"] >= 18 and metrics["valid_pairs"] >= 12
    loss = metrics["loss"]
    third = len(loss) // 3
    assert sum(loss[-third:]) / third < sum(loss[:third]) / third
    assert metrics["valid_accuracy"] >= max(0.75, metrics["valid_accuracy_before"])
    assert 0 < metrics["trainable_parameters"] < 20_000_000  # 2 of 30 layers + norm + head
    assert (out / "model" / "config.json").is_file() and json.loads((out / "manifest.json").read_text())


@pytest.mark.slow
def test_rerun_is_skipped_and_the_checkpoint_selects(trained, capsys):
    out, argv = trained
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out
    scorer = RewardScorer.load(out / "model")
    pair = json.loads((out / "pairs_valid.jsonl").read_text().splitlines()[0])
    rows = [
        {
            "id": "x",
            "term": pair["term"],
            "context": pair["context"],
            "prediction": text,
            "error": None,
            "sample_idx": i,
        }
        for i, text in enumerate([pair["rejected"], pair["chosen"]])
    ]
    scores = scorer.score([(pair["term"], pair["context"], r["prediction"]) for r in rows])
    best = select_sample(rows, "orm", reward=lambda t, c, cands: scorer.score([(t, c, x) for x in cands]))
    assert best["sample_idx"] == max(range(2), key=scores.__getitem__)


def test_mined_negatives_do_not_depend_on_the_generate_batch_size(smollm2_dir, wordnet_lexicon):
    """generate_batch_size is not a mining key: the same seed mines the same negatives at any batch size."""
    records = load_records(wordnet_lexicon / "train.jsonl")[:5]
    one = LocalBackend.from_path(str(smollm2_dir), device="cpu", batch_size=1)
    five = LocalBackend(one.model, one.tokenizer, name="smol", batch_size=5)
    sampling = Sampling(seed=4, max_new_tokens=8)
    mined = [
        sorted((p.id, p.rejected) for p in mine_negatives(backend, records, sampling, 3, 2)) for backend in (one, five)
    ]
    assert len(mined[0]) >= 6 and mined[0] == mined[1]


def test_negatives_are_the_policys_text_as_generated(smollm2_dir, wordnet_lexicon):
    """Mined negatives are never run through the chatty-answer parser (the policy is a local model)."""
    backend = LocalBackend.from_path(str(smollm2_dir), device="cpu", batch_size=4)
    texts: list[str] = []
    generate = backend.generate

    def recording(requests, sampling):
        for gen in generate(requests, sampling):
            texts.append(" ".join((gen.text or "").split()))
            yield gen

    backend.generate = recording
    records = load_records(wordnet_lexicon / "valid.jsonl")[:4]
    pairs = mine_negatives(backend, records, Sampling(max_new_tokens=12, seed=3), samples_per_prompt=3, keep=3)
    assert pairs and all(p.rejected in texts for p in pairs)
    assert {p.rejected for p in pairs} == {t for t in texts if t} - {r.definition for r in records}
