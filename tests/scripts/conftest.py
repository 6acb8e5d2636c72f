"""Fixtures of the script tests: the paper-script setting shrunk to seconds per step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.experiment import TOY_CONFIG


@pytest.fixture(scope="session")
def tiny_paper(tiny_llama: Path, wordnet_lexicon: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """run_config/paper_toy.json shrunk for tests: a tiny random Llama, 2 clusters of 60 WordNet records,
    1 step per model, 4 test inputs, BLEU + ROUGE. One work_dir serves every paper-script test, so they
    reuse each other's artefacts as the real scripts do."""
    cfg = json.loads(TOY_CONFIG.read_text(encoding="utf-8"))
    root = tmp_path_factory.mktemp("paper")
    cfg.update(
        work_dir=str(root / "work"),
        base_model=str(tiny_llama),
        num_clusters=2,
        train_records=60,
        valid_records=8,
        eval_items=4,
        metrics=["bleu", "rouge"],
    )
    cfg["cluster"].update(plot=False)
    cfg["train"].update(max_steps=1, eval_samples=4, eval_max_new_tokens=4, cutoff_len=48)
    cfg["finetune_router"].update(max_records=16, classifier_epochs=2, cutoff_len=48)
    cfg["reward"].update(
        samples_per_prompt=2,
        negatives_per_prompt=1,
        max_train_prompts=8,
        max_valid_prompts=4,
        batch_size=4,
        generate_batch_size=4,
        max_new_tokens=8,
    )
    cfg["infer"].update(max_new_tokens=8, batch_size=4)
    cfg["evaluate"].update(workers=1)
    path = root / "tiny_paper.json"
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return path
