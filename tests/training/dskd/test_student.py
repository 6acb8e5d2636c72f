"""Student construction and the loss terms with a narrower student (tiny random Llamas: no language needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from run_config.errors import ConfigError
from run_config.loader import load_config
from training.dskd.config import DSKDConfig
from training.dskd.examples import collate
from training.dskd.loss import SenseBank
from training.dskd.relations import Relations
from training.dskd.senses import SenseDictionary
from training.dskd.student import build_student, freeze_all_but_last
from training.dskd.trainer import compute_losses, evaluate_perplexity, example_nll


def _tiny(path: Path, hidden: int, layers: int, vocab: int = 96) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "teacher": _tiny(root / "teacher", 32, 4),
        "narrow": _tiny(root / "narrow", 16, 3),
        "other_vocab": _tiny(root / "other", 16, 2, vocab=80),
    }


def _cfg(**extra) -> DSKDConfig:
    return load_config(
        None, DSKDConfig, {"teacher_model": "t", "data_path_train": "d", "output_dir": "o", "gamma": 100.0, **extra}
    )


def _teacher(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path)).eval().requires_grad_(False)


def test_truncated_teacher_copy(models: dict[str, Path]) -> None:
    teacher = _teacher(models["teacher"])
    student, projection = build_student(
        _cfg(student_layers=3, trainable_layers=2), str(models["teacher"]), None, teacher, torch.device("cpu")
    )
    assert projection is None and len(student.model.layers) == 3
    assert torch.equal(student.model.layers[2].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in trainable)
    with pytest.raises(ConfigError, match="trainable_layers"):
        freeze_all_but_last(student, 4)


def test_narrow_student_gets_a_projection_and_all_terms(models: dict[str, Path]) -> None:
    teacher = _teacher(models["teacher"])
    cfg = _cfg(student_model="narrow", trainable_layers=1)
    student, projection = build_student(
        cfg, str(models["teacher"]), str(models["narrow"]), teacher, torch.device("cpu")
    )
    assert projection is not None and projection.weight.shape == (32, 16)
    senses = SenseDictionary(["a", "b"], torch.randn(5, 32), torch.tensor([0, 3, 5]))
    bank = SenseBank.build(senses, Relations({}, {"a": ["b"], "b": ["a"]}, []))
    examples = [
        {"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8], "sem": [(1, 0), (2, 1)]},
        {"input_ids": [1, 9, 10], "labels": [-100, -100, 10], "sem": []},
    ]
    terms = compute_losses(collate(examples, 0), student, teacher, projection, bank, cfg)
    assert set(terms) == {"ce", "kl", "sem_pull", "sem_push", "sem_push_active", "sem", "loss"}
    assert terms["sem_push_active"] == 1  # gamma 100 is far beyond every random-state MSE
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    terms["loss"].backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    grads = {n for n, p in student.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("model.layers.2.") for n in grads)


def test_ce_objective_needs_no_teacher_terms(models: dict[str, Path]) -> None:
    teacher = _teacher(models["teacher"])
    cfg = _cfg(objective="ce", student_layers=2)
    student, projection = build_student(cfg, str(models["teacher"]), None, teacher, torch.device("cpu"))
    terms = compute_losses(
        collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}], 0), student, teacher, projection, None, cfg
    )
    assert set(terms) == {"ce", "loss"} and torch.equal(terms["ce"], terms["loss"])


def test_student_with_another_vocabulary_is_refused(models: dict[str, Path]) -> None:
    teacher = _teacher(models["teacher"])
    with pytest.raises(ConfigError, match="vocabulary"):
        build_student(
            _cfg(student_model="x"), str(models["teacher"]), str(models["other_vocab"]), teacher, torch.device("cpu")
        )


def test_example_nll_sums_match_the_model_loss(models: dict[str, Path]) -> None:
    teacher = _teacher(models["teacher"])
    examples = [
        {"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
        {"input_ids": [1, 9, 10], "labels": [-100, -100, 10]},
    ]
    per_example = example_nll(teacher, examples, batch_size=2, pad_token_id=0)
    for (nll, tokens), e in zip(per_example, examples):
        loss = teacher(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss
        assert tokens == sum(label != -100 for label in e["labels"][1:])
        assert nll / tokens == pytest.approx(loss.item(), rel=1e-5)
    total = evaluate_perplexity(teacher, examples, 1, 0)
    assert total["tokens"] == 4 and total["loss"] == pytest.approx(sum(n for n, _ in per_example) / 4, rel=1e-6)
