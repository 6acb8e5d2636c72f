"""Calibration of the hinge margin γ from the teacher's antonym distances (pico Llama teacher, hand-built bank)."""

from __future__ import annotations

import pytest
import torch

from run_config.loader import load_config
from tests.helpers.pico import pico_llama
from training.dskd.config import DSKDConfig
from training.dskd.examples import collate
from training.dskd.loss import SenseBank
from training.dskd.margin import antonym_distances, margin_report
from training.dskd.relations import Relations
from training.dskd.senses import SenseDictionary
from training.dskd.trainer import compute_losses, resolve_margin

# word 0 "hot" has the antonym "cold" (word 1); word 2 "warm" has none.
EXAMPLES = [
    {"input_ids": [1, 11, 12, 13, 14], "labels": [-100, -100, 12, 13, 14], "sem": [(1, 0), (2, 2)]},
    {"input_ids": [1, 15, 16], "labels": [-100, -100, 16], "sem": [(1, 2)]},  # no antonym position
    {"input_ids": [1, 17, 18, 19], "labels": [-100, -100, 18, 19], "sem": [(2, 1), (1, 0)]},
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM

    folder = pico_llama(tmp_path_factory.mktemp("teacher"), seed=0)
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval().requires_grad_(False)


def _bank() -> SenseBank:
    vectors = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    senses = SenseDictionary(["hot", "cold", "warm"], vectors, torch.tensor([0, 2, 5, 6]))
    return SenseBank.build(senses, Relations({}, {"hot": ["cold"], "cold": ["hot"]}, []))


def test_distances_are_the_teacher_mse_to_its_nearest_antonym_senses(teacher) -> None:
    bank = _bank()
    distances, positions = antonym_distances(
        teacher, EXAMPLES, bank, kappa=2, batch_size=2, pad_token_id=3, max_examples=9
    )
    assert positions == 3  # (0,1,hot), (2,2,cold), (2,1,hot); "warm" has no antonyms
    antonym_rows = {0: bank.vectors[2:5], 1: bank.vectors[0:2]}  # hot -> cold's 3 senses, cold -> hot's 2
    expected = []
    for e in EXAMPLES:
        hidden = teacher.base_model(input_ids=torch.tensor([e["input_ids"]])).last_hidden_state[0]
        for t, w in e["sem"]:
            if w in antonym_rows:
                expected += sorted((hidden[t] - antonym_rows[w]).pow(2).mean(-1).tolist())[:2]
    assert sorted(distances.tolist()) == pytest.approx(sorted(expected), rel=1e-5)
    capped, positions = antonym_distances(teacher, EXAMPLES, bank, 2, 8, 3, max_examples=1)
    assert positions == 1 and len(capped) == 2


def test_report_calibrates_the_quantile_or_keeps_the_configured_margin() -> None:
    distances = torch.arange(1.0, 11.0)  # 1..10
    calibrated = margin_report(distances, 5, None, 0.5)
    assert calibrated["gamma"] == pytest.approx(5.5) and calibrated["source"].startswith("calibrated: quantile 0.5")
    assert calibrated["teacher_pairs_inside_margin"] == 0.5 and calibrated["pairs"] == 10
    assert calibrated["teacher_antonym_mse"]["q50"] == pytest.approx(5.5)
    fixed = margin_report(distances, 5, 1.0, 0.5)
    assert fixed["gamma"] == 1.0 and fixed["source"] == "config" and fixed["teacher_pairs_inside_margin"] == 0.0
    assert margin_report(torch.zeros(0), 0, None, 0.5)["gamma"] == 0.0  # no antonyms: the push stays off


def test_calibrated_margin_makes_the_push_act_at_the_teacher(teacher) -> None:
    """With γ = the q0.9 of the teacher's own distances, the teacher's state is inside the margin for ~90% of
    its antonym pairs; with a margin below every distance the push is 0."""
    bank = _bank()
    cfg = load_config(
        None,
        DSKDConfig,
        {"teacher_model": "t", "data_path_train": "d", "output_dir": "o", "gamma_quantile": 0.9, "kappa": 2},
    )
    margin = resolve_margin(cfg, teacher, EXAMPLES, bank, pad_id=3)
    assert margin["source"].startswith("calibrated") and margin["pairs"] == 6
    assert margin["teacher_pairs_inside_margin"] == pytest.approx(5 / 6)
    batch = collate(EXAMPLES, 3)
    with pytest.raises(ValueError, match="gamma is none"):
        compute_losses(batch, teacher, teacher, None, bank, cfg)
    terms = compute_losses(batch, teacher, teacher, None, bank, cfg.model_copy(update={"gamma": margin["gamma"]}))
    assert terms["sem_push_active"] == pytest.approx(5 / 6) and terms["sem_push"] > 0
    low = margin["teacher_antonym_mse"]["q10"] / 2
    terms = compute_losses(batch, teacher, teacher, None, bank, cfg.model_copy(update={"gamma": low}))
    assert terms["sem_push_active"] == 0 and terms["sem_push"] == 0
