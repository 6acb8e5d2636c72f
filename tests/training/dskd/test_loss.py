"""DSKD loss terms on hand-checkable tensors (behaviour does not depend on language here)."""

from __future__ import annotations

import torch

from training.dskd.loss import SenseBank, ce_loss, kl_loss, semantic_loss
from training.dskd.relations import Relations
from training.dskd.senses import SenseDictionary


def _bank() -> SenseBank:
    # word "a": senses at 0 and 10 (1-d); synonym "b": sense at 1; antonym "c": sense at -1.
    senses = SenseDictionary(["a", "b", "c"], torch.tensor([[0.0], [10.0], [1.0], [-1.0]]), torch.tensor([0, 2, 3, 4]))
    relations = Relations({"a": ["b"], "b": ["a"]}, {"a": ["c"], "c": ["a"]}, [])
    return SenseBank.build(senses, relations)


def test_candidate_sets_hold_own_synonym_and_antonym_senses() -> None:
    bank = _bank()
    rows, mask = bank.positives.padded(torch.tensor([0, 2]))
    assert rows[0][mask[0]].tolist() == [0, 1, 2] and rows[1][mask[1]].tolist() == [3]
    rows, mask = bank.negatives.padded(torch.tensor([0, 1]))
    assert rows[0][mask[0]].tolist() == [3] and not mask[1].any()


def test_kappa_nearest_to_the_teacher_state_are_pulled() -> None:
    bank = _bank()
    words = torch.tensor([0])
    teacher = torch.tensor([[0.2]])  # nearest two positives of "a": 0 and 1 (not 10)
    student = torch.tensor([[3.0]], requires_grad=True)
    pull, push, active = semantic_loss(student, teacher, words, bank, kappa=2, gamma=1.0)
    assert torch.isclose(pull, torch.tensor(((3 - 0) ** 2 + (3 - 1) ** 2) / 2))
    assert push == 0 and active == 0  # MSE to the antonym (-1) is 16 > gamma
    pull.backward()
    assert student.grad.item() > 0  # gradient descent moves the student toward the chosen senses


def test_hinge_pushes_only_inside_the_margin() -> None:
    bank = _bank()
    student = torch.tensor([[-0.5]], requires_grad=True)
    _, push, active = semantic_loss(student, torch.tensor([[0.0]]), torch.tensor([0]), bank, kappa=5, gamma=1.0)
    assert torch.isclose(push, torch.tensor(1.0 - 0.25)) and active == 1
    push.backward()
    assert student.grad.item() < 0  # descent moves away from the antonym at -1
    _, none, _ = semantic_loss(torch.tensor([[5.0]]), torch.tensor([[0.0]]), torch.tensor([1]), bank, 5, 100.0)
    assert none == 0  # "b" has no antonyms


def test_empty_targets_give_zero_with_a_graph() -> None:
    student = torch.zeros(0, 1, requires_grad=True)
    pull, push, _ = semantic_loss(student, torch.zeros(0, 1), torch.zeros(0, dtype=torch.long), _bank(), 5, 1.0)
    assert pull.item() == 0 and push.item() == 0 and pull.requires_grad


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    assert kl_loss(logits, logits).abs() < 1e-6
    assert kl_loss(logits, logits.flip(-1)) > 0
    expected = (
        torch.nn.functional.kl_div(
            torch.log_softmax(logits / 2, -1), torch.softmax(logits.flip(-1) / 2, -1), reduction="batchmean"
        )
        * 4
    )
    assert torch.isclose(kl_loss(logits, logits.flip(-1), temperature=2.0), expected)


def test_ce_matches_torch() -> None:
    logits, targets = torch.randn(5, 9), torch.tensor([1, 2, 3, 4, 0])
    assert torch.isclose(ce_loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets))
